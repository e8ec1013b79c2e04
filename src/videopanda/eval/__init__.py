"""videopanda.eval"""
