"""``python -m afp_tf.export``: the ``afp-tf-export`` command (:mod:`afp_tf.export.cli`)."""

from afp_tf.export.cli import run

if __name__ == "__main__":
    run()
