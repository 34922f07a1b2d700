"""The model registry: name -> (model class, config dataclass). Names are the CLI's choices."""
MODELS: dict = {}
