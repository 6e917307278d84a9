"""ss4d.render"""
