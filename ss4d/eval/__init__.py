"""ss4d.eval"""
