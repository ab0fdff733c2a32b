"""One module per stage, each with a plain `run(recipe, parent, out_dir) -> Artifact`."""
