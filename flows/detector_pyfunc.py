"""Models-from-code entry point of the detector pyfunc: MLflow copies this file into every
logged detector and runs it at load time (no pickled Python objects in the model)."""

import mlflow

from flows.detector_model import PersonalizedDetector

mlflow.models.set_model(PersonalizedDetector())
