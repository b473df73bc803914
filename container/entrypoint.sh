#!/bin/sh
# Entry point of both images. SageMaker starts a hosting container as
# `docker run IMAGE serve`; a plain `docker run IMAGE` runs the CMD (`serve` in the
# serving image). Any other command runs as given, e.g. `model-compile ...` in the
# compile image. `exec` makes the server PID 1, so SageMaker's SIGTERM reaches gunicorn
# directly and it drains in-flight requests before exiting.
set -eu
if [ "$#" -eq 0 ]; then
    set -- serve
fi
if [ "$1" = "train" ]; then
    echo "entrypoint: this image serves models; it cannot train (got 'train')" >&2
    exit 2
fi
exec "$@"
