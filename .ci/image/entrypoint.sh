#!/bin/sh
# The image's entry point. SageMaker runs `IMAGE train` or `IMAGE serve`; the SDK's local
# mode also runs plain commands in the image (`chmod -R 777 /delete` to clean up files its
# containers left root-owned on a Linux host), and people debug with `IMAGE bash`.
#   train, serve, evaluate, monitor, and anything not a program  ->  genkiln with them
#   a program on PATH (chmod, bash, python3, ...)     ->  that program
# `exec` replaces this shell, so the program is PID 1 and receives SIGTERM itself.
set -e
[ "$#" -gt 0 ] || set -- train
case "$1" in
    train | serve | evaluate | monitor) exec genkiln "$@" ;;
esac
if command -v -- "$1" >/dev/null 2>&1; then
    exec "$@"
fi
exec genkiln "$@"
