# Source this file (bash) to get the lisa_ros environment in a shell:
#   - the project venv and, unless a ROS 2 install is sourced, the ROS 2 wheels in it
#   - the colcon install of lisa_ros (.ws/install), unless called with --no-install, with its
#     executables (lisa_node, lisa-ros) on PATH as the README's commands use them
# Safe to source from scripts running with set -e and/or set -u (neither option is changed).
#   - DDS kept on 127.0.0.1 (Fast DDS profile) on a ROS_DOMAIN_ID of this run's own
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
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}"
if [ "${1:-}" != "--no-install" ] && [ -f "$_lisa_repo/.ws/install/local_setup.bash" ]; then
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
unset _lisa_repo _lisa_venv
