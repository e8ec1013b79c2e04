"""videopanda.model"""
