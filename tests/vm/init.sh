#!/bin/sh
# PID 1 of each `cargo xtask vmtest` guest (xtask/src/vmtest/). It only runs
# commands: it mounts what gleak needs, runs /vmtest/plan.sh (written by the
# host: start_fixture and check lines) and frames every output and exit code
# on the second serial port, /dev/ttyS1, which the host reads and judges.
# Frames are lines starting with "@@vmtest "; the kernel's own messages stay on
# the console (ttyS0). A machine with one serial port (arm64's virt) names it in
# VMTEST_RESULTS (from the kernel's command line): the frames share it with the
# console, so the kernel's messages are silenced but for emergencies.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/vmtest

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mkdir -p /tmp
# Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
ulimit -l unlimited

results=/dev/${VMTEST_RESULTS:-ttyS1}
[ "$results" = /dev/ttyS1 ] || dmesg -n 1
# Raw: no CR before each LF, no echo of what the host never sends.
stty -F "$results" raw -echo
exec 3>"$results"
say() { echo "@@vmtest $*" >&3; }
say "init $(uname -r)"

# start_fixture ID PROGRAM READY_LINE: starts PROGRAM in the background, sets
# PID_<ID> and waits up to 60 s for READY_LINE on its stdout.
start_fixture() {
	"$2" >"/tmp/$1.out" 2>"/tmp/$1.err" &
	eval "PID_$1=$!"
	waited=0
	until grep -qx "$3" "/tmp/$1.out" 2>/dev/null; do
		if [ $waited -ge 600 ] || ! kill -0 $! 2>/dev/null; then
			say "note fixture $1 ($2) did not print '$3': $(tail -c 300 "/tmp/$1.err" | tr '\n' ' ')"
			return
		fi
		sleep 0.1
		waited=$((waited + 1))
	done
	say "ready $1 (pid $!)"
}

# emit NAME: frames /tmp/NAME, ending it with a newline if it lacks one.
emit() {
	say "$1"
	cat "/tmp/$1" >&3
	[ -n "$(tail -c 1 "/tmp/$1")" ] && echo >&3
}

# check ID SECONDS COMMAND...: runs COMMAND, killed after SECONDS (SIGKILL:
# gleak treats SIGTERM as a normal end), and frames its outputs and status.
check() {
	id=$1
	limit=$2
	shift 2
	say "start $id"
	started=$(date +%s)
	timeout -s KILL "$limit" "$@" >/tmp/stdout 2>/tmp/stderr
	rc=$?
	say "begin $id"
	emit stdout
	emit stderr
	say "end $id rc=$rc secs=$(($(date +%s) - started))"
}

. /vmtest/plan.sh
say "done"
poweroff -f
