"""ss4d.export"""
