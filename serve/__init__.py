"""The SageMaker serving contract for XGBoost models, compiled (TL2cgen) or stock, on Flask + gunicorn."""
