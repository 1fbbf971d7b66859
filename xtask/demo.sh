#!/bin/bash
# The demo `cargo xtask demo` runs inside the VM: a 3-layer overlay on a private tmpfs, a
# workload that looks like a container start (reads, appends, creates, failed lookups), traced.
set -euo pipefail
TRACER=$1
D=/run/overlay-trace-demo
mkdir -p $D && mount -t tmpfs tmpfs $D
mkdir -p $D/{base,libs,app,upper,work,merged}
mkdir -p $D/base/etc $D/base/var/log $D/libs/usr/lib $D/app/srv/app
head -c 8388608 /dev/urandom > $D/base/var/log/app.log
for i in $(seq 1 40); do head -c 4096 /dev/urandom > $D/libs/usr/lib/lib$i.so; done
for i in $(seq 1 20); do echo "key$i=value" > $D/base/etc/conf$i; done
head -c 1048576 /dev/urandom > $D/app/srv/app/data.db
mount -t overlay overlay -o lowerdir=$D/app:$D/libs:$D/base,upperdir=$D/upper,workdir=$D/work $D/merged
cat > $D/workload.sh <<W
cd $D/merged
cat usr/lib/*.so > /dev/null
for i in \$(seq 1 100); do [ -e usr/lib/libmissing\$i.so ] || true; done
echo started >> var/log/app.log
echo x >> srv/app/data.db
for i in 1 2 3; do echo changed >> etc/conf\$i; done
chmod 600 etc/conf4
mkdir -p srv/app/cache && touch srv/app/cache/new
W
echo "demo: tracing a simulated container start on a 3-layer overlay at $D/merged"
"$TRACER" run -q -- bash $D/workload.sh
