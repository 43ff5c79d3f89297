"""Calibration: raw score -> P(relevant).

calibrators (temperature, Platt, isotonic; scikit-learn contract, JSON state) and evaluate (the one
place that fits them on a run's 'cal' split and measures them on 'test').
"""
