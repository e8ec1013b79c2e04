"""videopanda.data"""
