"""ss4d.pipeline"""
