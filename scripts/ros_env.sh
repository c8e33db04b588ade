# Source this file (bash) to get the lisa_ros environment in a shell:
#   - the project venv and, unless a ROS 2 install is sourced, the ROS 2 wheels in it
#   - the colcon install of lisa_ros (.ws/install), unless called with --no-install, with its
#     executables (lisa_node, lisa-ros) on PATH as the README's commands use them
#   - networking: by default the shell's own (robot use): RMW_IMPLEMENTATION, ROS_DOMAIN_ID,
#     ROS_AUTOMATIC_DISCOVERY_RANGE / ROS_LOCALHOST_ONLY and the Fast DDS profile are left as they
#     are, so a camera driver on the robot's domain is seen. With --isolated (tests, demo, benchmarks):
#     DDS kept on 127.0.0.1 (config/fastdds_localhost.xml) and a random ROS_DOMAIN_ID for this run
#     alone, so a run neither reaches the network nor meets a node or camera already running.
#   One line on stderr says which networking is in effect (once per shell while it stays the same).
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
_lisa_install=1
_lisa_isolated=
for _lisa_arg in "$@"; do
  case $_lisa_arg in
    --no-install) _lisa_install= ;;
    --isolated | --own-domain) _lisa_isolated=1 ;;  # --own-domain: its former name
    *) echo "scripts/ros_env.sh: unknown option $_lisa_arg (known: --isolated, --no-install)" >&2 ;;
  esac
done
if [ -n "$_lisa_isolated" ]; then
  # The profile is Fast DDS's, so the RMW is too; a domain the shell brought (often the robot's) is not kept.
  export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
  export FASTRTPS_DEFAULT_PROFILES_FILE="$_lisa_repo/config/fastdds_localhost.xml"
  export FASTDDS_DEFAULT_PROFILES_FILE="$FASTRTPS_DEFAULT_PROFILES_FILE"
  export ROS_DOMAIN_ID=$(( RANDOM % 100 + 1 ))
  # The profile alone decides the transports: with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
  # (or ROS_LOCALHOST_ONLY) rmw_fastrtps opens extra sockets on 0.0.0.0 and the external
  # interface (seen with `ss -u -a -n -p`); without them every socket is on 127.0.0.1. Static
  # peers, a discovery server or builtin transports from the environment would add other addresses.
  unset ROS_AUTOMATIC_DISCOVERY_RANGE ROS_LOCALHOST_ONLY ROS_STATIC_PEERS ROS_DISCOVERY_SERVER \
    FASTDDS_BUILTIN_TRANSPORTS
  _lisa_said="lisa_ros network: isolated: DDS on 127.0.0.1 only (config/fastdds_localhost.xml), ROS_DOMAIN_ID=$ROS_DOMAIN_ID of this run alone: no camera or node outside it is visible"
else
  _lisa_profile="${FASTRTPS_DEFAULT_PROFILES_FILE:-${FASTDDS_DEFAULT_PROFILES_FILE:-}}"
  if [ "$_lisa_profile" = "$_lisa_repo/config/fastdds_localhost.xml" ]; then
    _lisa_profile="$_lisa_profile (loopback only, from an --isolated shell: only this host's nodes on this domain are visible)"
  fi
  if [ -n "${ROS_AUTOMATIC_DISCOVERY_RANGE:-}" ]; then
    _lisa_range="$ROS_AUTOMATIC_DISCOVERY_RANGE"
  elif [ "${ROS_LOCALHOST_ONLY:-0}" = 1 ]; then
    _lisa_range="LOCALHOST (ROS_LOCALHOST_ONLY=1)"
  else
    _lisa_range="SUBNET (default)"
  fi
  _lisa_said="lisa_ros network: the shell's own: ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-0 (default)}, discovery $_lisa_range, RMW ${RMW_IMPLEMENTATION:-default (rmw_fastrtps_cpp)}, DDS profile ${_lisa_profile:-none (the RMW defaults)}"
fi
if [ "$_lisa_said" != "${_lisa_ros_env_said:-}" ]; then
  echo "$_lisa_said" >&2
  _lisa_ros_env_said=$_lisa_said
fi
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
unset _lisa_repo _lisa_venv _lisa_install _lisa_isolated _lisa_arg _lisa_said _lisa_profile _lisa_range
