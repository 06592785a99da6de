# Sourced by every script: strict mode, and a one-line reason on stderr when
# a command fails (the script then exits with that command's status).
set -Eeuo pipefail
trap 'echo "${0##*/}: \`$BASH_COMMAND\` failed with exit $? (line $LINENO)" >&2' ERR
