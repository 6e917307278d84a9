"""ss4d.train"""
