#!/usr/bin/env bash
# The shell baseline failover watcher (also drives Pacemaker's IPaddr2 agent).
#
# Run it inside the gateway's namespace:
#   watch.sh MODE HOME SURVIVOR ADDRFILE ROUTEFILE LOGFILE FAILBACK MAXSECONDS
#
#   MODE      ip       `ip addr del` on HOME, `ip addr add` on SURVIVOR, `arping -U` (background);
#                      IPv6: `ip addr add ... nodad` and `ndptool -U` (libndp-tools: unsolicited NA, background)
#             ipaddr2  IPaddr2 stop (nic=HOME), IPaddr2 start (nic=SURVIVOR); IPaddr2 announces
#                      (IPv6: with nodad=true, else it waits for the kernel's DAD before announcing)
#   ADDRFILE  one ADDRESS/PREFIX a line: the addresses that live on HOME
#   ROUTEFILE one route a line without its device ("198.19.0.0/32 via 192.0.2.1"); may be empty
#   LOGFILE   step log: "EPOCHREALTIME event detail" lines (CLOCK_REALTIME seconds)
#   FAILBACK  1: move everything back when HOME regains carrier; 0: never
#   MAXSECONDS the watcher exits after this long (bounded, like everything the bench starts)
#
# It watches `ip -o monitor link`: NO-CARRIER / state DOWN on HOME moves routes
# first (so the last announcement ends the whole job) and then each address in
# turn, announcing it right after it is added; LOWER_UP on HOME moves them back.
# The bench starts it in its own process group and ends that group by its id.
set -u
mode=$1 home=$2 survivor=$3 addrfile=$4 routefile=$5 logfile=$6 failback=$7 maxs=$8
RA=${RA:-/usr/lib/ocf/resource.d/heartbeat/IPaddr2}

log() { printf '%s %s\n' "$EPOCHREALTIME" "$*" >>"$logfile"; }

mapfile -t addrs <"$addrfile"
routes=()
[ -s "$routefile" ] && mapfile -t routes <"$routefile"

move_one() {  # address from to
  local a=$1 from=$2 to=$3 ip=${1%/*} plen=${1#*/} nodad=false
  [[ $ip == *:* ]] && nodad=true
  if [ "$mode" = ipaddr2 ]; then
    OCF_RESOURCE_INSTANCE="vip-$ip" OCF_RESKEY_ip=$ip OCF_RESKEY_cidr_netmask=$plen OCF_RESKEY_nic=$from \
      "$RA" stop >/dev/null 2>&1
    log del "$a"
    OCF_RESOURCE_INSTANCE="vip-$ip" OCF_RESKEY_ip=$ip OCF_RESKEY_cidr_netmask=$plen OCF_RESKEY_nic=$to \
      OCF_RESKEY_nodad=$nodad "$RA" start >/dev/null 2>&1
    log add "$a"
    log announce "$a"   # IPaddr2 start has launched send_arp by the time it returns
  else
    ip addr del "$a" dev "$from" 2>/dev/null
    log del "$a"
    if [ "$nodad" = true ]; then
      ip addr add "$a" dev "$to" nodad
      log add "$a"
      ndptool -t na -U -i "$to" -T "$ip" send </dev/null >/dev/null 2>&1 &
    else
      ip addr add "$a" dev "$to"
      log add "$a"
      arping -q -U -c 1 -I "$to" -s "$ip" "$ip" </dev/null >/dev/null 2>&1 &
    fi
    log announce "$a"
  fi
}

move_all() {  # from to
  local from=$1 to=$2 r a
  for r in "${routes[@]}"; do
    # shellcheck disable=SC2086  # a route line is several words on purpose
    ip route del $r dev "$from" 2>/dev/null
    # shellcheck disable=SC2086
    ip route add $r dev "$to"
  done
  [ ${#routes[@]} -gt 0 ] && log routes "${#routes[@]}"
  for a in "${addrs[@]}"; do
    move_one "$a" "$from" "$to"
  done
  log done "$to"
}

at=home
# --foreground keeps `timeout` (and `ip monitor`) in our process group, which the bench ends as a whole.
exec 3< <(exec timeout --foreground "$maxs" ip -o monitor link)
sleep 0.2   # let `ip monitor` subscribe before saying ready
log ready "$mode"
# An event that arrived before subscription would be missed: look once now.
if ip -o link show dev "$home" | grep -q 'NO-CARRIER'; then
  log detect "$home down"; move_all "$home" "$survivor"; at=survivor
fi
while IFS= read -r line <&3; do
  case $line in
    *": $home:"* | *": $home@"*) ;;
    *) continue ;;
  esac
  if [[ $line == *NO-CARRIER* || $line == *"state DOWN"* ]]; then
    if [ "$at" = home ]; then
      log detect "$home down"
      move_all "$home" "$survivor"
      at=survivor
    fi
  elif [[ $line == *LOWER_UP* ]]; then
    if [ "$at" = survivor ] && [ "$failback" = 1 ]; then
      log detect "$home up"
      move_all "$survivor" "$home"
      at=home
    elif [ "$at" = survivor ]; then
      at=home   # no failback: the bench puts the addresses back itself before the next trial
      log detect "$home up (no failback)"
    fi
  fi
done
wait
