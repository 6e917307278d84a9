"""ss4d.models"""
