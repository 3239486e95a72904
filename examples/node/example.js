#!/usr/bin/env node
// A Node.js client of snoopd's control API, written as automation
// elsewhere would write it, from this repository's protos alone
// (docs/clients.md). Against a running snoopd and a distcache server it
// connects (unix socket or TCP, with a bearer token if given), creates a
// proxy, decodes the error details of three refused calls, applies a set
// of two proxies, watches one of them with a filter while dcload sends
// load through it, checks that the watch saw exactly the load's GETs, and
// deletes what it made. One line per step; exit status 1 on any failure.
//
//   node example.js --address unix:///tmp/snoopd-$(id -u)/snoopd.sock \
//       --server IP:127.0.0.1:9001 --dcload "$(go env GOPATH)/bin/dcload" [--token-file FILE]
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { execFile } = require('node:child_process');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

// The API and the google/rpc protos its errors use, from this repository.
const PROTO = path.resolve(__dirname, '..', '..', 'proto');
const INCLUDE_DIRS = [PROTO, path.join(PROTO, 'third_party')];

// The loader options that make proto-loader's objects agree with
// protojson as snoopctl -o json prints it (docs/clients.md): field names
// as in the .proto (snake_case, as FieldMask paths are written), int64 as
// decimal strings, enums by name, zero values present, and a virtual
// field naming the member set of each oneof.
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: INCLUDE_DIRS,
};

function parseArgs(argv) {
  const o = { address: '', tokenFile: '', server: '', dcload: '', prefix: 'node', ops: 600 };
  const names = { '--address': 'address', '--token-file': 'tokenFile', '--server': 'server', '--dcload': 'dcload', '--prefix': 'prefix', '--ops': 'ops' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key || i + 1 >= argv.length) {
      throw new Error(`unknown or incomplete argument ${JSON.stringify(argv[i])} (want ${Object.keys(names).join(', ')})`);
    }
    o[key] = key === 'ops' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!o.address || !o.server || !o.dcload || !(o.ops > 0)) {
    throw new Error('--address, --server and --dcload are required, and --ops must be 1 or more');
  }
  return o;
}

// Promisified unary call.
function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + 10000 }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

// The error details: the google.rpc.Status in the grpc-status-details-bin
// trailer, each detail an Any decoded by its type URL.
const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (origin, target) => {
  for (const dir of INCLUDE_DIRS) {
    const p = path.join(dir, target);
    if (fs.existsSync(p)) return p;
  }
  return target; // google/protobuf/*.proto: protobufjs has them built in
};
rpcRoot.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
const Status = rpcRoot.lookupType('google.rpc.Status');

function errorDetails(err) {
  const raw = err.metadata && err.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return [];
  const st = Status.decode(raw);
  return st.details.map((any) => {
    const type = rpcRoot.lookupType(any.type_url.slice(any.type_url.lastIndexOf('/') + 1));
    return { type: type.fullName.slice(1), value: type.toObject(type.decode(any.value), { longs: String, enums: String, defaults: true }) };
  });
}

function describeError(err) {
  if (!err) return 'no error';
  const parts = [grpc.status[err.code]];
  for (const d of errorDetails(err)) {
    if (d.type === 'google.rpc.ErrorInfo') parts.push(`reason=${d.value.reason}`, `domain=${d.value.domain}`);
    if (d.type === 'google.rpc.ResourceInfo') parts.push(`resource=${d.value.resource_type}/${d.value.resource_name}`);
    if (d.type === 'google.rpc.BadRequest') for (const f of d.value.field_violations) parts.push(`field=${f.field}`);
  }
  return `${parts.join(' ')}: ${err.details}`;
}

async function refused(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('a call that should fail succeeded');
}

// runLoad runs dcload against a proxy and returns its JSON report.
function runLoad(dcload, addr, ops) {
  return new Promise((resolve, reject) => {
    execFile(dcload, ['-addr', addr, '-ops', String(ops), '-json', '-verify', '-conns', '2', '-sessions', '100', '-data', '100-200'],
      { timeout: 60000 }, (err, stdout, stderr) => {
        if (err) return reject(new Error(`dcload: ${err.message}\n${stderr}`));
        resolve(JSON.parse(stdout));
      });
  });
}

// watchGets watches proxy's GET transactions, starts the load once the
// watch is live (the history notice says it is registered; every event
// after it is live) and counts events until they match the load's GETs.
function watchGets(events, proxy, startLoad) {
  return new Promise((resolve, reject) => {
    const stream = events.WatchEvents({ proxies: [proxy], operations: ['get'], history: 1, max_batch: 64 });
    let live = false;
    let seen = 0;
    let want = -1;
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      stream.cancel();
      if (err) reject(err);
      else resolve({ seen, want });
    };
    const check = () => {
      if (want >= 0 && seen >= want) finish();
    };
    stream.on('data', (r) => {
      // oneofs: true is not needed here: a response is a notice or events.
      if (r.history_done && !live) {
        live = true;
        seen = 0;
        startLoad().then((n) => {
          want = n;
          check();
        }, finish);
        return;
      }
      if (Number(r.dropped) > 0) return finish(new Error(`watch: ${r.dropped} events dropped`));
      if (r.event) seen++;
      seen += r.events.length;
      check();
    });
    stream.on('error', (err) => {
      if (err.code !== grpc.status.CANCELLED) finish(new Error(`watch: ${describeError(err)}`));
    });
    setTimeout(() => finish(new Error(`watch: saw ${seen} GETs of ${want} within 60s`)), 60000).unref();
  });
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const def = protoLoader.loadSync('snoop/v1/snoop.proto', LOADER_OPTIONS);
  const snoop = grpc.loadPackageDefinition(def).snoop.v1;

  // A token goes in the authorization header of every call. grpc-js
  // refuses call credentials on an insecure channel, so over a unix socket
  // or loopback TCP an interceptor adds it.
  const options = {};
  if (o.tokenFile) {
    const token = fs.readFileSync(o.tokenFile, 'utf8').trim();
    options.interceptors = [
      (opts, next) => new grpc.InterceptingCall(next(opts), {
        start(metadata, listener, nextStart) {
          metadata.set('authorization', `Bearer ${token}`);
          nextStart(metadata, listener);
        },
      }),
    ];
  }
  // grpc-js takes "unix:///path" and "host:port" as they are.
  const creds = grpc.credentials.createInsecure();
  const proxies = new snoop.ProxyService(o.address, creds, options);
  const events = new snoop.EventService(o.address, creds, options);
  const daemon = new snoop.DaemonService(o.address, creds, options);

  const info = await call(daemon, 'GetDaemonInfo', {});
  console.log(`connected: snoopd ${info.version}, engine ${info.engine}, ${info.proxies} proxies`);

  const one = `${o.prefix}-one`;
  const two = `${o.prefix}-two`;
  try {
    const created = (await call(proxies, 'CreateProxy', { spec: { name: one, listen: 'IP:127.0.0.1:0', server: o.server } })).proxy;
    const eff = created.effective_spec;
    // Durations are {seconds, nanos} objects here; protojson writes "5s".
    console.log(`created ${one}: listening on ${created.listen_host} port ${created.listen_port} (${created.listen_address}), ` +
      `state ${created.state}, spares ${eff.spare_connections}, dial timeout ${eff.dial_timeout.seconds}s`);

    console.log('create again:', describeError(await refused(call(proxies, 'CreateProxy', { spec: { name: one, listen: 'IP:127.0.0.1:0', server: o.server } }))));
    console.log('get missing:', describeError(await refused(call(proxies, 'GetProxy', { name: `${o.prefix}-missing` }))));
    console.log('create bad:', describeError(await refused(call(proxies, 'CreateProxy', { spec: { name: `${o.prefix}-bad`, listen: 'IP:99999', server: o.server } }))));

    const applied = await call(proxies, 'ApplyProxies', {
      proxies: [
        { name: one, listen: 'IP:127.0.0.1:0', server: o.server },
        { name: two, listen: 'IP:127.0.0.1:0', server: o.server, spare_connections: 1 },
      ],
    });
    let target = '';
    for (const r of applied.results) {
      console.log(`apply: ${r.name} ${r.action} at ${r.proxy.listen_address}`);
      if (r.name === two) target = r.proxy.listen_address;
    }

    const res = await watchGets(events, two, async () => {
      const report = await runLoad(o.dcload, target, o.ops);
      const get = report.by_op.find((b) => b.op === 'GET');
      return get ? get.count : 0;
    });
    console.log(`watch: ${res.seen} GETs seen, ${res.want} sent`);
    if (res.seen !== res.want) throw new Error(`the watch saw ${res.seen} GETs, dcload made ${res.want}`);

    const got = (await call(proxies, 'GetProxy', { name: two })).proxy;
    const gets = got.counters.ops.find((c) => c.op === 'OP_GET');
    // int64 counters arrive as decimal strings (longs: String).
    console.log(`counters: OP_GET ${gets.count} (${typeof gets.count}) ${JSON.stringify(gets.results)}`);
  } finally {
    for (const name of [one, two]) {
      try {
        await call(proxies, 'DeleteProxy', { name });
        console.log(`deleted ${name}`);
      } catch (err) {
        console.log(`delete ${name}: ${describeError(err)}`);
      }
    }
    proxies.close();
    events.close();
    daemon.close();
  }
}

main().catch((err) => {
  console.error(`example: ${err.code !== undefined ? describeError(err) : err.message}`);
  process.exit(1);
});
