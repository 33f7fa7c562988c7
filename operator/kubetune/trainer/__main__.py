import os
import sys
import threading

from kubetune.trainer.main import main

code = main()
# An upload abandoned at a SIGTERM deadline (CheckpointUploader.stop) still has requests in flight in
# the worker threads of boto3's transfer manager: non-daemon ThreadPoolExecutor threads
# (s3transfer/futures.py:426 EXECUTOR_CLS @0.19.3), which the interpreter joins at exit
# (concurrent/futures/thread.py:23-37, threading._register_atexit @3.11).  sys.exit would then wait
# for that request (botocore's read timeout, its retries) past the pod's grace period, and the kubelet's
# SIGKILL (137) would replace the exit code main chose.  The record is written and the streams are
# flushed here, so nothing else is left to do at exit.  (Those workers are daemon threads when our
# transfer threads started them, and are joined all the same: the test is on our threads' names.)
UPLOADERS = ("kubetune-transfer-", "kubetune-final-upload", "kubetune-checkpoint-upload")
if any(t.is_alive() and t.name.startswith(UPLOADERS) for t in threading.enumerate()):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
