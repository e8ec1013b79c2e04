"""videopanda.train"""
