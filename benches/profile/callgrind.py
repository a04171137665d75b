#!/usr/bin/env python3
"""Instructions and heap allocations per proxied request, counted with valgrind's callgrind.

The gateway (file-gateway, release build) runs under callgrind with the peer comparison's route
table (benches/peers/peers.py) in front of an nginx backend; after a warm-up the counters are
zeroed, the load generator sends keep-alive requests (closed loop) for a fixed window, and the
counters are dumped. Instruction counts do not depend on other work on the machine (unlike CPU
time), so this compares builds on a busy machine. Allocations are the calls into mimalloc's
allocation entry points (file-gateway's global allocator).

  python3 benches/profile/callgrind.py --gateway target/release/file-gateway \
      --loadgen target/release/loadgen [--routes 10] [--seconds 20] [--connections 50] [--port-offset N] \
      [--extra-config policy.yaml] [--loadgen-arg=--header=authorization:Bearer...]

`--extra-config` adds a YAML file to the gateway's configuration (e.g. a TrafficPolicy attached
to the Gateway `gw`: the cost a filter adds is the difference with a run without it);
`--loadgen-arg` passes an argument to every load generator run (headers, method, body, tail).

Prints one JSON object: requests, instructions_per_request, allocations_per_request,
reallocations_per_request and the callgrind output file (for callgrind_annotate).
"""
import argparse, json, os, re, subprocess, sys, tempfile, time, urllib.error, urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'peers'))
import peers  # noqa: E402  (the route table and backend of the peer comparison)



def use_ports(offset):
    """Ports of their own (plus `offset`), so that a peer comparison or another run of this
    script at the same time does not collide."""
    peers.BE1, peers.BE2, peers.PROXY_PORT, peers.TLS_PORT, peers.ADMIN = (
        p + offset for p in (28080, 28079, 28090, 28443, 29902))

ALLOC = ('mi_malloc_aligned', 'mi_zalloc_aligned')
REALLOC = ('mi_realloc_aligned',)


def counts(path):
    """Total instructions, and the calls into the allocator's entry points from outside it."""
    total, allocs, reallocs = 0, 0, 0
    names, fn, cfn = {}, None, None

    def name(ref):
        m = re.match(r'\((\d+)\)(?: (.*))?', ref)
        if not m:
            return ref
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), '')

    with open(path) as f:
        pending_calls = None
        for line in f:
            if line.startswith('summary:') or line.startswith('totals:'):
                total = int(line.split()[1])
            elif line.startswith('fn='):
                fn = name(line[3:].strip())
            elif line.startswith('cfn='):
                cfn = name(line[4:].strip())
            elif line.startswith('calls='):
                pending_calls = int(line[6:].split()[0])
                if not fn.startswith('mi_') and not fn.startswith('_mi_'):
                    if cfn in ALLOC:
                        allocs += pending_calls
                    elif cfn in REALLOC:
                        reallocs += pending_calls
    return total, allocs, reallocs


def ready(port, timeout=1800):
    """Waits for the first 200 (10,000 routes take minutes to load under valgrind)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{port}/svc-0/x', timeout=2) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:  # answered by a filter (e.g. 401 from an authentication policy)
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit('the gateway did not become ready')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--gateway', required=True)
    ap.add_argument('--loadgen', required=True)
    ap.add_argument('--routes', type=int, default=10)
    ap.add_argument('--seconds', type=float, default=20)
    ap.add_argument('--connections', type=int, default=50)
    ap.add_argument('--port-offset', type=int, default=0, help='added to every port (concurrent runs)')
    ap.add_argument('--out', help='callgrind output file (default: in a temporary directory)')
    ap.add_argument('--extra-config', help='a YAML file added to the gateway configuration')
    ap.add_argument('--loadgen-arg', action='append', default=[], help='passed to the load generator')
    a = ap.parse_args()
    use_ports(a.port_offset)
    d = tempfile.mkdtemp(prefix='gw-callgrind-')
    out = a.out or f'{d}/callgrind.out'
    log = open(f'{d}/log', 'w')
    backend = subprocess.Popen(peers.backend_conf(d), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cmd = peers.gateway_conf(d, a.routes, set(), os.path.abspath(a.gateway))
    if a.extra_config:
        with open(a.extra_config) as src, open(f'{d}/gw/extra.yaml', 'w') as dst:
            dst.write(src.read())
    gw = subprocess.Popen(['valgrind', '--tool=callgrind', f'--callgrind-out-file={out}', '--dump-line=no',
                           '--collect-atstart=yes'] + cmd, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
    try:
        ready(peers.PROXY_PORT)
        # The status of every route is published after the first 200; at 10,000 routes that is
        # minutes of work under valgrind, which must not be counted.
        deadline = time.monotonic() + 1800
        while 'configuration status published' not in open(f'{d}/log').read():
            if time.monotonic() > deadline:
                raise SystemExit('the status was not published')
            time.sleep(1)
        url = f'http://127.0.0.1:{peers.PROXY_PORT}/'
        load = [a.loadgen, '--url', url, '--routes', str(a.routes), '--rate', '0',
                '--connections', str(a.connections)] + a.loadgen_arg
        subprocess.run(load + ['--duration', '3'], check=True, capture_output=True)
        subprocess.run(['callgrind_control', '-z', str(gw.pid)], check=True, capture_output=True)
        r = subprocess.run(load + ['--duration', str(a.seconds)], check=True, capture_output=True, text=True)
        subprocess.run(['callgrind_control', '-d', str(gw.pid)], check=True, capture_output=True)
        result = json.loads(r.stdout)
    finally:
        peers.stop(gw)
        peers.stop(backend)
    dumps = sorted((p for p in os.listdir(os.path.dirname(out)) if p.startswith(os.path.basename(out) + '.')),
                   key=lambda p: int(p.rsplit('.', 1)[1]) if p.rsplit('.', 1)[1].isdigit() else 0)
    dumps = [p for p in dumps if p.rsplit('.', 1)[1].isdigit() and p.rsplit('.', 1)[1] != '0']
    # The dump after the window (the first numbered one after zeroing; the zeroing itself does not dump).
    path = os.path.join(os.path.dirname(out), dumps[0]) if dumps else out
    total, allocs, reallocs = counts(path)
    n = result.get('requests') or result.get('ok') or 0
    errors = result.get('errors', 0)
    print(json.dumps({'routes': a.routes, 'requests': n, 'errors': errors, 'non_2xx': result.get('non_2xx'), 'instructions_per_request': round(total / n),
                      'allocations_per_request': round(allocs / n, 2),
                      'reallocations_per_request': round(reallocs / n, 2), 'callgrind': path}))


if __name__ == '__main__':
    main()
