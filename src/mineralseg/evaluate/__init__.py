"""mineralseg.evaluate"""
