#!/bin/sh
# The image's entry point. SageMaker runs `IMAGE train` or `IMAGE serve` (and the pipelines'
# processing jobs `IMAGE evaluate ...`, `IMAGE monitor ...`); the SDK's local mode also runs
# plain commands in the image (`chmod -R 777 /delete` to clean up files its containers left
# root-owned on a Linux host), and people debug with `IMAGE bash`.
#   train, evaluate, monitor  ->  python3 -m training VERB ...   (training/command.py)
#   serve                     ->  python3 -m inference serve ...  (inference/command.py)
#   a program on PATH (chmod, bash, python3, ...)  ->  that program
# `exec` replaces this shell, so the program is PID 1 and receives SIGTERM itself.
set -e
[ "$#" -gt 0 ] || set -- train
case "$1" in
    train | evaluate | monitor) exec python3 -m training "$@" ;;
    serve) exec python3 -m inference "$@" ;;
esac
if command -v -- "$1" >/dev/null 2>&1; then
    exec "$@"
fi
echo "genkiln image: '$1' is neither a verb (train, serve, evaluate, monitor) nor a program" >&2
exit 2
