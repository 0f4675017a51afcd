"""The model repository: `<model_dir>/<name>/<version>/{model.safetensors, metadata.json}`."""
