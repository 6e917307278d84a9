"""ss4d.nn"""
