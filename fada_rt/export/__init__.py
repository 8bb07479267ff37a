"""``python -m fada_rt.export``: torch checkpoints -> ONNX graphs -> TensorRT engines (docs/design.md §5).

* ``wrappers``: the torch modules traced for each graph (specs in fada_rt/backends/graphs.py).
* ``samples``: their sample inputs, made the way the runtime makes them.
* ``onnx_export``: tracing, I/O checks against the spec, saving (external data over ~1.9 GB).
* ``fp16``: the fp16 rewrite with fp32 islands (norm statistics, softmax inputs, time embedding).
* ``parity``: tolerances and checks against torch fp32, per graph and for a whole 6-step chunk.
* ``tensorrt_build``: strongly typed TensorRT plans with a timing cache, and their parity.
* ``engines``: the whole export of one checkpoint into one engine directory + manifest.json.

fada_rt never imports this package; the runtime reads only the engine directory.
"""
