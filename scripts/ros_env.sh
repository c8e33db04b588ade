# Source this file (bash) to get the lisa_ros environment in a shell:
#   - the project venv and, unless a ROS 2 install is sourced, the ROS 2 wheels in it
#   - the colcon install of lisa_ros (.ws/install), unless called with --no-install, with its
#     executables (lisa_node, lisa-ros) on PATH as the README's commands use them
#   - DDS kept on 127.0.0.1 (Fast DDS profile). ROS_DOMAIN_ID, unless already set: one of this
#     checkout's and user's own (the same in every shell, so a node and a replay started from two
#     shells meet), or with --own-domain a random one for this run alone (tests, demo, benchmarks:
#     they must not meet a node the user left running).
# Safe to source from scripts running with set -e and/or set -u (neither option is changed).
_lisa_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_lisa_venv="$_lisa_repo/.venv"
export VIRTUAL_ENV="$_lisa_venv"
export PATH="$_lisa_venv/bin:$PATH"
if [ -z "${ROS_DISTRO:-}" ]; then
  export AMENT_PREFIX_PATH="$_lisa_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$_lisa_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export LD_LIBRARY_PATH="$_lisa_venv/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export FASTRTPS_DEFAULT_PROFILES_FILE="$_lisa_repo/config/fastdds_localhost.xml"
export FASTDDS_DEFAULT_PROFILES_FILE="$FASTRTPS_DEFAULT_PROFILES_FILE"
# The profile alone decides the transports: with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# (or ROS_LOCALHOST_ONLY) rmw_fastrtps opens extra sockets on 0.0.0.0 and the external
# interface (seen with `ss -u -a -n -p`); without them every socket is on 127.0.0.1.
unset ROS_AUTOMATIC_DISCOVERY_RANGE ROS_LOCALHOST_ONLY
_lisa_install=1
_lisa_domain=$(( $(printf '%s:%s' "$_lisa_repo" "$(id -u)" | cksum | cut -d ' ' -f 1) % 100 + 1 ))
for _lisa_arg in "$@"; do
  case $_lisa_arg in
    --no-install) _lisa_install= ;;
    --own-domain) _lisa_domain=$(( RANDOM % 100 + 1 )) ;;
  esac
done
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$_lisa_domain}"
if [ -n "$_lisa_install" ] && [ -f "$_lisa_repo/.ws/install/local_setup.bash" ]; then
  # colcon's scripts read unset variables: source them without -u, then restore the caller's option
  # (a test like `x=$([[ $- == *u* ]] && echo 1)` fails, and would end a `set -e` caller, when -u is off).
  case $- in *u*) _lisa_nounset=1 ;; *) _lisa_nounset= ;; esac
  set +u
  # shellcheck disable=SC1091
  source "$_lisa_repo/.ws/install/local_setup.bash"
  if [ -n "$_lisa_nounset" ]; then set -u; fi
  # colcon installs executables into lib/<package>, which only `ros2 run` looks in.
  _lisa_bin="$_lisa_repo/.ws/install/lisa_ros/lib/lisa_ros"
  case ":$PATH:" in *":$_lisa_bin:"*) ;; *) export PATH="$_lisa_bin:$PATH" ;; esac
  unset _lisa_nounset _lisa_bin
fi
unset _lisa_repo _lisa_venv _lisa_install _lisa_domain _lisa_arg
