"""Makes the models that the service serves: data, fine-tuning, evaluation, export."""
