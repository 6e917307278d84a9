"""ss4d.data"""
