#!/usr/bin/env python3
"""System calls per proxied keep-alive request, counted with `strace -c -f`.

The gateway (file-gateway, release build) runs with the peer comparison's route table
(benches/peers/peers.py) in front of an nginx backend; after a warm-up, strace attaches to every
thread of the gateway (`strace -c -f -p PID`), the load generator sends keep-alive requests
(closed loop) for a fixed window, strace detaches and its summary is divided by the requests
the load generator completed. Every system call of the process counts (epoll_wait and timers
included), so the figure compares with the `syscalls/req` column of peers.py (perf's
raw_syscalls tracepoint), which needs a kernel that lets perf attach. strace slows the gateway
down, which changes how many requests one epoll wake-up finds ready; use the same --connections
to compare builds.

  python3 benches/profile/syscalls.py --gateway target/release/file-gateway \\
      --loadgen target/release/loadgen [--routes 10] [--seconds 5] [--connections 50] [--port-offset N]

Prints one JSON object: requests, syscalls_per_request and the count per system call.
"""
import argparse, json, os, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'peers'))
import peers  # noqa: E402  (the route table and backend of the peer comparison)
from callgrind import use_ports  # noqa: E402


def ready(port, timeout=120):
    import urllib.request
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{port}/svc-0/x', timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit('the gateway did not become ready')


def parse(path):
    """strace -c's table: name -> calls (errors included, as the kernel entered the call)."""
    calls = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and not f[-1].startswith('total'):
            try:
                calls[f[-1]] = int(f[3])
            except ValueError:
                pass
    return calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--gateway', required=True)
    ap.add_argument('--loadgen', required=True)
    ap.add_argument('--routes', type=int, default=10)
    ap.add_argument('--seconds', type=float, default=5)
    ap.add_argument('--connections', type=int, default=50)
    ap.add_argument('--port-offset', type=int, default=0, help='added to every port (concurrent runs)')
    a = ap.parse_args()
    use_ports(a.port_offset)
    d = tempfile.mkdtemp(prefix='gw-syscalls-')
    log = open(f'{d}/log', 'w')
    backend = subprocess.Popen(peers.backend_conf(d), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    gw = subprocess.Popen(peers.gateway_conf(d, a.routes, set(), os.path.abspath(a.gateway)), stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ready(peers.PROXY_PORT)
        url = f'http://127.0.0.1:{peers.PROXY_PORT}/'
        load = [a.loadgen, '--url', url, '--routes', str(a.routes), '--rate', '0',
                '--connections', str(a.connections)]
        subprocess.run(load + ['--duration', '2'], check=True, capture_output=True)
        out = f'{d}/strace'
        tracer = subprocess.Popen(['strace', '-c', '-f', '-o', out, '-p', str(gw.pid)],
                                  stdout=log, stderr=subprocess.STDOUT)
        time.sleep(1)  # attached to every thread
        r = subprocess.run(load + ['--duration', str(a.seconds)], check=True, capture_output=True, text=True)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
        result = json.loads(r.stdout)
    finally:
        peers.stop(gw)
        peers.stop(backend)
    calls = parse(out)
    n = result.get('requests') or result.get('ok') or 0
    total = sum(calls.values())
    print(json.dumps({'routes': a.routes, 'requests': n, 'errors': result.get('errors', 0),
                      'syscalls_per_request': round(total / n, 3),
                      'per_call': {k: round(v / n, 3) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}}))


if __name__ == '__main__':
    main()
