/**
 * A lab of network namespaces for multi-node tests: each node is a namespace with one veth per
 * network, each network a bridge in the root namespace that also carries a host address (so a
 * server in the test process, such as the fake Kubernetes API server, is reachable from the
 * nodes). Links can be cut and shaped with tbf; netem is not available on the CI machines.
 *
 * Needs root. Every address is in 198.18.0.0/15 (RFC 2544 benchmarking space), one /24 per
 * network. The kernel itself arbitrates between concurrent jest workers: a /24 belongs to whoever
 * created the bridge named after it. Nothing outlives the test process: a watchdog process removes
 * the lab when the test process dies without destroy(), and should the watchdog die too, the next
 * lab with the same prefix removes the leftovers (the links' alias names the owning pid).
 */

import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';

export interface NetNode {
  /** The network namespace. */
  readonly name: string;
  /** Interface name in the namespace (eth0, net1) -> IPv4 address. */
  readonly addresses: Readonly<Record<string, string>>;
  /** Interface name in the namespace -> its veth peer in the root namespace. */
  readonly hostVeths: Readonly<Record<string, string>>;
}

export interface Lab {
  readonly nodes: readonly NetNode[];
  /** Network name -> the root namespace's address on that network's bridge. */
  readonly hostAddresses: Readonly<Record<string, string>>;
  /** Network name -> its bridge in the root namespace. */
  readonly bridges: Readonly<Record<string, string>>;
  /**
   * Runs `ip netns exec <ns> <file> <args>` (no shell) in its own process group. With `env`, the
   * command sees exactly that environment plus PATH (unless `env` sets it); without, the test's.
   */
  spawnIn(
    node: NetNode,
    file: string,
    args: readonly string[],
    options?: { env?: Record<string, string> },
  ): ChildProcess;
  /** Runs a short command in the namespace and returns its stdout; throws (with stderr) on failure. */
  execIn(node: NetNode, file: string, args: readonly string[]): string;
  /** Both ends of one node's link go down (the node is cut off that network) or up again. */
  setLink(node: NetNode, iface: string, up: boolean): void;
  /** tbf on the egress of both veth ends, so both directions are limited; undefined removes it. */
  shape(node: NetNode, iface: string, rateMbit: number | undefined): void;
  /** Kills what spawnIn started, deletes namespaces, veths and bridges. Idempotent. */
  destroy(): Promise<void>;
}

export interface LabOptions {
  /** 1 to 253: node k (from 0) gets host number k + 1 on every network; the host gets .254. */
  readonly nodes: number;
  /** Interface names, one bridge and one /24 each, e.g. ['eth0'] or ['eth0', 'net1']. */
  readonly networks: readonly string[];
  /** Lower-case letters and digits, starting with a letter, at most 6; default 'apl'. */
  readonly prefix?: string;
}

const PATH = process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const DEFAULT_PREFIX = 'apl';
/** The /24 blocks of 198.18.0.0/15. */
const SUBNETS = 512;
const RANGE_START = ipv4ToNumber('198.18.0.0');
const HOST_NUMBER = 254;
const MAX_NODES = HOST_NUMBER - 1;
const OWNER_ALIAS = 'autopilot-netns-lab pid=';
const owner = (): string => `${OWNER_ALIAS}${process.pid}`;
// Guards against a hang, reached only on failure: room for a loaded 2-CPU machine.
const READY_TIMEOUT_MS = 15_000;
const EXIT_TIMEOUT_MS = 15_000;

let labsCreated = 0;

export function labSupported(): { ok: true } | { ok: false; reason: string } {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'network labs need root' };
  for (const [tool, args] of [
    ['ip', ['netns', 'list']],
    ['tc', ['qdisc', 'show', 'dev', 'lo']],
  ] as const) {
    try {
      execFileSync(tool, args, { env: { PATH }, stdio: 'ignore' });
    } catch (error) {
      return { ok: false, reason: `\`${tool} ${args.join(' ')}\` failed: ${errorText(error)}` };
    }
  }
  return { ok: true };
}

/** Runs fn with a fresh lab and destroys the lab afterwards, whether fn succeeds or throws. */
export async function withLab<T>(
  options: LabOptions,
  fn: (lab: Lab) => Promise<T> | T,
): Promise<T> {
  const lab = await createLab(options);
  try {
    return await fn(lab);
  } finally {
    await lab.destroy();
  }
}

interface Resources {
  readonly namespaces: string[];
  readonly veths: string[];
  readonly bridges: string[];
  readonly children: Set<ChildProcess>;
}

export async function createLab(options: LabOptions): Promise<Lab> {
  const prefix = options.prefix ?? DEFAULT_PREFIX;
  validate(options, prefix);
  const support = labSupported();
  if (!support.ok) throw new Error(`cannot create a network lab: ${support.reason}`);
  removeLeftovers(prefix);

  const labNumber = ++labsCreated;
  const resources: Resources = { namespaces: [], veths: [], bridges: [], children: new Set() };
  let watchdog: Watchdog | undefined;

  let nodes: NetNode[];
  const hostAddresses: Record<string, string> = {};
  const bridges: Record<string, string> = {};
  try {
    const subnets = claimSubnets(prefix, options.networks.length, resources);
    const names = Array.from(
      { length: options.nodes },
      (_, index) => `${prefix}-${process.pid}-${labNumber}-${index + 1}`,
    );
    watchdog = startWatchdog(names, [
      ...subnets.flatMap((subnet) => names.map((_, node) => vethName(prefix, subnet, node))),
      ...resources.bridges,
    ]);
    nodes = names.map((name) => {
      ip('netns', 'add', name);
      resources.namespaces.push(name);
      ip('-n', name, 'link', 'set', 'lo', 'up');
      return { name, addresses: {}, hostVeths: {} };
    });
    options.networks.forEach((network, networkIndex) => {
      const subnet = subnets[networkIndex] as number;
      const bridge = bridgeName(prefix, subnet);
      ip('addr', 'add', `${subnetAddress(subnet, HOST_NUMBER)}/24`, 'dev', bridge);
      ip('link', 'set', bridge, 'up');
      hostAddresses[network] = subnetAddress(subnet, HOST_NUMBER);
      bridges[network] = bridge;
      nodes.forEach((node, nodeIndex) => {
        const veth = vethName(prefix, subnet, nodeIndex);
        const address = subnetAddress(subnet, nodeIndex + 1);
        ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', network, 'netns', node.name);
        resources.veths.push(veth);
        ip('link', 'set', veth, 'alias', owner(), 'master', bridge, 'up');
        ip('-n', node.name, 'addr', 'add', `${address}/24`, 'dev', network);
        ip('-n', node.name, 'link', 'set', network, 'up');
        (node.addresses as Record<string, string>)[network] = address;
        (node.hostVeths as Record<string, string>)[network] = veth;
      });
    });
    await waitUntilUp(nodes);
  } catch (error) {
    cleanUp(resources);
    watchdog?.dismiss();
    throw new Error(
      `could not create a network lab of ${options.nodes} nodes on ${options.networks.join(', ')}: ${errorText(error)}`,
      { cause: error },
    );
  }

  let destroying: Promise<void> | undefined;
  const shaped = new Set<string>();
  const own = (node: NetNode): NetNode => {
    if (destroying !== undefined) throw new Error('the network lab has been destroyed');
    const found = nodes.find((candidate) => candidate.name === node.name);
    if (found === undefined) throw new Error(`${node.name} is not a node of this lab`);
    return found;
  };
  const interfaceOf = (node: NetNode, iface: string): string => {
    const veth = own(node).hostVeths[iface];
    if (veth === undefined) throw new Error(`${node.name} has no interface ${iface}`);
    return veth;
  };

  return {
    nodes,
    hostAddresses,
    bridges,
    spawnIn(node, file, args, spawnOptions) {
      const env = spawnOptions?.env === undefined ? process.env : { PATH, ...spawnOptions.env };
      const child = spawn('ip', ['netns', 'exec', own(node).name, file, ...args], {
        detached: true,
        env,
        stdio: 'pipe',
      });
      resources.children.add(child);
      child.once('exit', () => resources.children.delete(child));
      return child;
    },
    execIn(node, file, args) {
      return run('ip', ['netns', 'exec', own(node).name, file, ...args]);
    },
    setLink(node, iface, up) {
      const veth = interfaceOf(node, iface);
      const state = up ? 'up' : 'down';
      ip('link', 'set', veth, state);
      ip('-n', node.name, 'link', 'set', iface, state);
    },
    shape(node, iface, rateMbit) {
      const veth = interfaceOf(node, iface);
      const ends = [
        [veth, []],
        [iface, ['-n', node.name]],
      ] as const;
      const key = `${node.name}/${iface}`;
      if (rateMbit === undefined) {
        if (!shaped.has(key)) return;
        for (const [dev, namespace] of ends) {
          run('tc', [...namespace, 'qdisc', 'del', 'dev', dev, 'root']);
        }
        shaped.delete(key);
        return;
      }
      if (!Number.isFinite(rateMbit) || rateMbit <= 0) {
        throw new Error(`rate must be a positive number of Mbit/s, got ${rateMbit}`);
      }
      // Veths hand tbf GSO packets of up to 64 KiB, so the bucket holds at least one of them.
      const burstBytes = Math.max(65536, Math.ceil((rateMbit * 1e6) / 8 / 100));
      for (const [dev, namespace] of ends) {
        run('tc', [
          ...namespace,
          'qdisc',
          'replace',
          'dev',
          dev,
          'root',
          'tbf',
          'rate',
          `${rateMbit}mbit`,
          'burst',
          String(burstBytes),
          'latency',
          '50ms',
        ]);
      }
      shaped.add(key);
    },
    destroy() {
      destroying ??= (async () => {
        const children = [...resources.children];
        for (const child of children) killGroup(child);
        await Promise.all(children.map(exited));
        // Whatever else runs in the namespaces, e.g. something a spawned process started in a
        // process group of its own.
        const others = resources.namespaces.flatMap(namespacePids);
        for (const pid of others) signal(pid);
        await gone(others);
        cleanUp(resources);
        watchdog?.dismiss();
      })();
      return destroying;
    },
  };
}

function validate(options: LabOptions, prefix: string): void {
  if (!/^[a-z][a-z0-9]{0,5}$/.test(prefix)) {
    throw new Error(`prefix must be 1 to 6 lower-case letters or digits, got '${prefix}'`);
  }
  if (!Number.isInteger(options.nodes) || options.nodes < 1 || options.nodes > MAX_NODES) {
    throw new Error(`nodes must be an integer from 1 to ${MAX_NODES}, got ${options.nodes}`);
  }
  if (options.networks.length === 0) throw new Error('a lab needs at least one network');
  if (new Set(options.networks).size !== options.networks.length) {
    throw new Error(`network names must be distinct: ${options.networks.join(', ')}`);
  }
  for (const network of options.networks) {
    if (!/^[a-zA-Z][a-zA-Z0-9_-]{0,14}$/.test(network) || network === 'lo') {
      throw new Error(`'${network}' cannot be an interface name`);
    }
  }
}

/** Claims free /24s by creating the bridges named after them; the kernel refuses a second claim. */
function claimSubnets(prefix: string, count: number, resources: Resources): number[] {
  const taken = subnetsInUse();
  const claimed: number[] = [];
  const start = (process.pid * 7) % SUBNETS;
  for (let step = 0; step < SUBNETS && claimed.length < count; step++) {
    const subnet = (start + step) % SUBNETS;
    if (taken.has(subnet)) continue;
    const bridge = bridgeName(prefix, subnet);
    try {
      ip('link', 'add', 'name', bridge, 'type', 'bridge');
    } catch (error) {
      if (/File exists/.test(errorText(error))) continue;
      throw error;
    }
    resources.bridges.push(bridge);
    ip('link', 'set', bridge, 'alias', owner());
    claimed.push(subnet);
  }
  if (claimed.length < count) throw new Error('no free /24 left in 198.18.0.0/15');
  return claimed;
}

/** /24 blocks of 198.18.0.0/15 that any route of the root namespace touches. */
function subnetsInUse(): Set<number> {
  const routes = JSON.parse(ip('-j', '-4', 'route', 'show', 'table', 'all')) as { dst?: string }[];
  const used = new Set<number>();
  for (const { dst } of routes) {
    const match = /^(\d+\.\d+\.\d+\.\d+)(?:\/(\d+))?$/.exec(dst ?? '');
    if (match === null) continue;
    const length = Number(match[2] ?? 32);
    const first = ipv4ToNumber(match[1] as string) - RANGE_START;
    const last = first + 2 ** (32 - length) - 1;
    for (let block = Math.max(0, first >> 8); block <= Math.min(SUBNETS - 1, last >> 8); block++) {
      used.add(block);
    }
  }
  return used;
}

/** Namespaces and links of labs whose process and watchdog are both gone. */
function removeLeftovers(prefix: string): void {
  const namespacePattern = new RegExp(`^${prefix}-(\\d+)-\\d+-\\d+$`);
  for (const line of ip('netns', 'list').split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const owner = namespacePattern.exec(name)?.[1];
    if (owner !== undefined && !isAlive(Number(owner))) deleteNamespace(name);
  }

  const links = JSON.parse(ip('-j', 'link', 'show')) as { ifname: string; ifalias?: string }[];
  const bridgePattern = new RegExp(`^${prefix}b([0-9a-z]{2})$`);
  const vethPattern = new RegExp(`^${prefix}v([0-9a-z]{2})[0-9a-z]{2}$`);
  const liveBridges = new Set<string>();
  const staleBridges: string[] = [];
  for (const { ifname, ifalias } of links) {
    const subnet = bridgePattern.exec(ifname)?.[1];
    if (subnet === undefined) continue;
    // A bridge without its alias yet is being set up by another worker right now.
    const ours = ifalias?.startsWith(OWNER_ALIAS) ?? false;
    if (ours && !isAlive(Number(ifalias?.slice(OWNER_ALIAS.length)))) staleBridges.push(ifname);
    else liveBridges.add(subnet);
  }
  for (const { ifname } of links) {
    const subnet = vethPattern.exec(ifname)?.[1];
    if (subnet !== undefined && !liveBridges.has(subnet)) tryIp('link', 'del', ifname);
  }
  for (const bridge of staleBridges) tryIp('link', 'del', bridge);
}

/** Best effort: what is already gone is skipped. */
function cleanUp(resources: Resources): void {
  for (const child of resources.children) killGroup(child);
  for (const namespace of resources.namespaces.splice(0)) deleteNamespace(namespace);
  // A namespace outlives `ip netns del` while a process is still in it, and with it its veths.
  for (const veth of resources.veths.splice(0)) tryIp('link', 'del', veth);
  for (const bridge of resources.bridges.splice(0)) tryIp('link', 'del', bridge);
}

function deleteNamespace(name: string): void {
  for (const pid of namespacePids(name)) signal(pid);
  tryIp('netns', 'del', name);
}

function namespacePids(name: string): number[] {
  try {
    return ip('netns', 'pids', name).split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

interface Watchdog {
  /** The lab was cleaned up normally; the watchdog exits without doing anything. */
  dismiss(): void;
}

/** Marks the watchdog in `ps` and /proc/<pid>/cmdline. */
export const WATCHDOG_NAME = 'netns-lab-watchdog';

// Reads until the test process says `done` or dies (end of file): then it deletes everything.
const WATCHDOG_SCRIPT = `read -r line
[ "$line" = done ] && exit 0
for ns in $LAB_NAMESPACES; do
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
done
# Only links still ours: after a normal destroy another lab may own the name by now.
for link in $LAB_LINKS; do
  ip -o link show dev "$link" 2>/dev/null | grep -q "alias $LAB_OWNER$" && ip link del "$link"
done
exit 0`;

/**
 * Cleans up after a test process that dies without destroy(), SIGKILL included. An exit handler
 * cannot do this under jest: the test sandbox's `process` is a copy whose 'exit' never fires.
 */
function startWatchdog(namespaces: readonly string[], links: readonly string[]): Watchdog {
  const child = spawn('sh', ['-c', WATCHDOG_SCRIPT, WATCHDOG_NAME], {
    detached: true,
    env: {
      PATH,
      LAB_NAMESPACES: namespaces.join(' '),
      LAB_LINKS: links.join(' '),
      LAB_OWNER: owner(),
    },
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  // It must neither keep the test process alive nor outlive it by its own doing.
  child.unref();
  const input = child.stdin as Socket;
  input.unref();
  input.on('error', () => undefined);
  return {
    dismiss() {
      input.end('done\n');
    },
  };
}

async function gone(pids: readonly number[]): Promise<void> {
  const deadline = Date.now() + EXIT_TIMEOUT_MS;
  while (pids.some(isRunning) && Date.now() < deadline) await sleep(20);
}

/** Running, not a zombie that its (new) parent has not reaped yet. */
function isRunning(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntilUp(nodes: readonly NetNode[]): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (const node of nodes) {
    for (const [iface, veth] of Object.entries(node.hostVeths)) {
      while (!isUp(veth) || !isUp(iface, node.name)) {
        if (Date.now() > deadline) throw new Error(`${node.name} ${iface} did not come up`);
        await sleep(20);
      }
    }
  }
}

function isUp(iface: string, namespace?: string): boolean {
  const where = namespace === undefined ? [] : ['-n', namespace];
  const [link] = JSON.parse(ip(...where, '-j', 'link', 'show', 'dev', iface)) as {
    operstate?: string;
  }[];
  return link?.operstate === 'UP';
}

function killGroup(child: ChildProcess): void {
  if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
    signal(-child.pid);
  }
}

function signal(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, EXIT_TIMEOUT_MS);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const bridgeName = (prefix: string, subnet: number): string => `${prefix}b${base36(subnet)}`;

const vethName = (prefix: string, subnet: number, node: number): string =>
  `${prefix}v${base36(subnet)}${base36(node)}`;

const base36 = (value: number): string => value.toString(36).padStart(2, '0');

function subnetAddress(subnet: number, host: number): string {
  return `198.${18 + (subnet >> 8)}.${subnet & 255}.${host}`;
}

function ipv4ToNumber(address: string): number {
  return address.split('.').reduce((value, octet) => value * 256 + Number(octet), 0);
}

function ip(...args: string[]): string {
  return run('ip', args);
}

function tryIp(...args: string[]): void {
  try {
    run('ip', args);
  } catch {
    // Best effort: it may be gone already.
  }
}

function run(file: string, args: readonly string[]): string {
  try {
    return execFileSync(file, args, {
      encoding: 'utf8',
      env: { PATH },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 30_000,
    });
  } catch (error) {
    throw new Error(`${file} ${args.join(' ')}: ${errorText(error)}`, { cause: error });
  }
}

function errorText(error: unknown): string {
  const stderr = (error as { stderr?: unknown }).stderr;
  if (typeof stderr === 'string' && stderr.trim() !== '') return stderr.trim();
  return error instanceof Error ? error.message : String(error);
}
