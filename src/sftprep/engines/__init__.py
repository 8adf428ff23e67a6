"""Engines that run `prepare` beyond one machine. sftprep builds no distributed machinery of its own:
each engine maps the same per-batch `Preparer.run_batch` over an engine that already scales.

`sftprep.engines.ray_engine` (needs `pip install "ray[data]"`): `prepare_ray` (the whole run, same outputs
as the local engine) and `map_prepare` (the preparation as a step of your own `ray.data` pipeline).
Import the module itself: this package imports no engine eagerly.
"""
