"""ss4d.sparse"""
