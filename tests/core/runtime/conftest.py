"""Fixtures shared by the runtime tests: a real moto S3 server (see ``flowrun_testing``)."""

from flowrun_testing import moto_s3_server, s3_base  # noqa: F401  (fixtures, used by name)
