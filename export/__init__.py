"""Deploy-side runners, each a script importing only numpy and its runtime (never afp_tf).

Installed as ``afp_tf.deploy``; run them as files: ``python export/run_tflite.py model.tflite``.
"""
