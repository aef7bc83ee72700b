/**
 * The network-namespace lab used by multi-node tests: real namespaces, veths, bridges, ping,
 * iperf3 and tbf. Needs root; CI runs as root, so an unsupported machine fails here rather than
 * skipping. All traffic stays in 198.18.0.0/15 on bridges the lab creates.
 */
import { describe, test, expect, beforeAll, afterAll } from '@jest/globals';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import ts from 'typescript';
import { WATCHDOG_NAME, createLab, labSupported, withLab } from '../fakes/netns.js';
import type { Lab, NetNode } from '../fakes/netns.js';

const PATH = process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const BENCHMARKING_RANGE = /^198\.1[89]\.\d{1,3}\.\d{1,3}$/;

const run = (file: string, args: readonly string[]): string =>
  execFileSync(file, args, { encoding: 'utf8', env: { PATH }, stdio: ['ignore', 'pipe', 'pipe'] });

function reaches(ping: (args: string[]) => string, address: string): boolean {
  try {
    ping(['-c1', '-W1', address]);
    return true;
  } catch {
    return false;
  }
}

const reachesFrom = (lab: Lab, node: NetNode, address: string): boolean =>
  reaches((args) => lab.execIn(node, 'ping', args), address);

const at = <T>(items: readonly T[], index: number): T => {
  const item = items[index];
  if (item === undefined) throw new Error(`no item ${index}`);
  return item;
};

const addressOf = (node: NetNode, iface: string): string => {
  const address = node.addresses[iface];
  if (address === undefined) throw new Error(`${node.name} has no ${iface}`);
  return address;
};

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function childrenOf(parent: number): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        // Field 4 of /proc/<pid>/stat, after the parenthesised command name.
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(') ') + 2).split(' ')[1]) === parent;
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Running, not a zombie nobody has reaped yet. */
function isRunning(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

const namespaces = (): string[] =>
  run('ip', ['netns', 'list'])
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter(Boolean);

const links = (): string[] =>
  (JSON.parse(run('ip', ['-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname);

/** The lab's links in the root namespace: host-side veths and bridges. */
const linksOf = (lab: Lab): string[] => [
  ...lab.nodes.flatMap((node) => Object.values(node.hostVeths)),
  ...Object.values(lab.bridges),
];

const hostIPv4Addresses = (): string[] =>
  (
    JSON.parse(run('ip', ['-j', '-4', 'addr', 'show'])) as { addr_info: { local: string }[] }[]
  ).flatMap((link) => link.addr_info.map((info) => info.local));

/** Receiver's throughput of a 1 s TCP test from `client` to `server`'s address on `iface`. */
async function measureMbit(lab: Lab, client: NetNode, server: NetNode, iface: string) {
  const address = addressOf(server, iface);
  const port = '5201';
  // Without --forceflush iperf3 buffers its greeting in the pipe.
  const listener = lab.spawnIn(server, 'iperf3', [
    '-s',
    '-1',
    '-B',
    address,
    '-p',
    port,
    '--forceflush',
  ]);
  try {
    await new Promise<void>((resolve, reject) => {
      let output = '';
      const timer = setTimeout(() => reject(new Error(`iperf3 server: ${output}`)), 15_000);
      listener.stdout?.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('Server listening')) {
          clearTimeout(timer);
          resolve();
        }
      });
      listener.once('exit', (code) => reject(new Error(`iperf3 server exited with ${code}`)));
    });
    const report = JSON.parse(
      lab.execIn(client, 'iperf3', ['-c', address, '-p', port, '-J', '-t', '1']),
    ) as { error?: string; end?: { sum_received?: { bits_per_second?: number } } };
    // iperf3 -J exits 0 on some errors.
    expect(report.error).toBeUndefined();
    return (report.end?.sum_received?.bits_per_second ?? Number.NaN) / 1e6;
  } finally {
    listener.kill('SIGKILL');
  }
}

test('this machine can run network labs (root, ip, tc)', () => {
  expect(labSupported()).toStrictEqual({ ok: true });
});

describe('a lab of three nodes on two networks', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await createLab({ nodes: 3, networks: ['eth0', 'net1'] });
  });

  afterAll(async () => {
    await lab.destroy();
  });

  test('every node reaches every other node on both networks, and the host reaches the nodes', () => {
    expect(lab.nodes).toHaveLength(3);
    const all = lab.nodes.flatMap((node) => Object.values(node.addresses));
    expect(new Set(all).size).toBe(6);
    for (const address of [...all, ...Object.values(lab.hostAddresses)]) {
      expect(address).toMatch(BENCHMARKING_RANGE);
    }
    for (const node of lab.nodes) {
      expect(Object.keys(node.addresses)).toStrictEqual(['eth0', 'net1']);
      expect(lab.execIn(node, 'ip', ['-br', '-4', 'addr', 'show', 'dev', 'net1'])).toContain(
        `${addressOf(node, 'net1')}/24`,
      );
      for (const name of Object.values(node.hostVeths)) expect(name.length).toBeLessThanOrEqual(15);
    }

    for (const from of lab.nodes) {
      for (const to of lab.nodes) {
        if (from === to) continue;
        for (const network of ['eth0', 'net1']) {
          expect([from.name, network, reachesFrom(lab, from, addressOf(to, network))]).toEqual([
            from.name,
            network,
            true,
          ]);
        }
      }
    }
    const first = at(lab.nodes, 0);
    expect(reaches((args) => run('ping', args), addressOf(first, 'eth0'))).toBe(true);
    expect(reachesFrom(lab, first, lab.hostAddresses.net1 ?? '')).toBe(true);
  });

  test('a link taken down cuts that network only, and brought up restores it', () => {
    const [node1, node2] = [at(lab.nodes, 0), at(lab.nodes, 1)];
    lab.setLink(node2, 'eth0', false);
    try {
      expect(reachesFrom(lab, node1, addressOf(node2, 'eth0'))).toBe(false);
      expect(reachesFrom(lab, node1, addressOf(node2, 'net1'))).toBe(true);
    } finally {
      lab.setLink(node2, 'eth0', true);
    }
    expect(reachesFrom(lab, node1, addressOf(node2, 'eth0'))).toBe(true);
  });

  test('tbf shaping limits one interface in both directions, and removing it lifts the limit', async () => {
    const [node1, node2] = [at(lab.nodes, 0), at(lab.nodes, 1)];
    lab.shape(node1, 'eth0', 20);
    try {
      const toShaped = await measureMbit(lab, node2, node1, 'eth0');
      expect(toShaped).toBeGreaterThan(5);
      expect(toShaped).toBeLessThan(40);
      const fromShaped = await measureMbit(lab, node1, node2, 'eth0');
      expect(fromShaped).toBeLessThan(40);
      expect(await measureMbit(lab, node2, node1, 'net1')).toBeGreaterThan(200);
    } finally {
      lab.shape(node1, 'eth0', undefined);
    }
    expect(await measureMbit(lab, node2, node1, 'eth0')).toBeGreaterThan(200);
  });

  test('spawnIn runs in the namespace with exactly the given environment plus PATH', async () => {
    const node = at(lab.nodes, 2);
    const child = lab.spawnIn(node, 'sh', ['-c', 'env; ip -4 -br addr show dev eth0'], {
      env: { GREETING: 'hello' },
    });
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise((resolve) => child.once('close', resolve));
    expect(code).toBe(0);
    expect(output).toContain('GREETING=hello\n');
    expect(output).toContain(`PATH=${PATH}\n`);
    expect(output).not.toMatch(/^JEST_WORKER_ID=/m);
    expect(output).toContain(`${addressOf(node, 'eth0')}/24`);
  });

  test('nodes of another lab are refused', () => {
    const stranger: NetNode = { name: 'elsewhere', addresses: {}, hostVeths: {} };
    expect(() => lab.execIn(stranger, 'true', [])).toThrow('elsewhere is not a node of this lab');
    expect(() => lab.setLink(at(lab.nodes, 0), 'net9', false)).toThrow('has no interface net9');
  });
});

describe('clean-up', () => {
  test('destroy kills spawned process groups and removes namespaces, veths and bridges', async () => {
    const lab = await createLab({ nodes: 2, networks: ['eth0'], prefix: 'apd' });
    const names = lab.nodes.map((node) => node.name);
    const node = at(lab.nodes, 0);
    const child = lab.spawnIn(node, 'sleep', ['60']);
    // A grandchild in the same process group.
    const shell = lab.spawnIn(node, 'sh', ['-c', 'sleep 61 & echo $!; wait']);
    const grandchild = await new Promise<number>((resolve) =>
      shell.stdout?.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim()))),
    );
    expect(isRunning(child.pid ?? 0)).toBe(true);
    expect(isRunning(grandchild)).toBe(true);
    const ours = linksOf(lab);
    expect(ours).toHaveLength(3);
    expect(links()).toEqual(expect.arrayContaining(ours));

    await lab.destroy();
    await lab.destroy();

    expect(child.signalCode).toBe('SIGKILL');
    expect(isRunning(grandchild)).toBe(false);
    expect(namespaces().filter((name) => names.includes(name))).toStrictEqual([]);
    expect(links().filter((name) => ours.includes(name))).toStrictEqual([]);
    expect(hostIPv4Addresses()).not.toContain(lab.hostAddresses.eth0);
    expect(() => lab.execIn(node, 'true', [])).toThrow('destroyed');
  });

  test('withLab destroys the lab when the test body throws', async () => {
    let names: string[] = [];
    let ours: string[] = [];
    await expect(
      withLab({ nodes: 1, networks: ['eth0'], prefix: 'apw' }, (lab) => {
        names = lab.nodes.map((node) => node.name);
        ours = linksOf(lab);
        throw new Error('test body failed');
      }),
    ).rejects.toThrow('test body failed');
    expect(names).toHaveLength(1);
    expect(namespaces().filter((name) => names.includes(name))).toStrictEqual([]);
    expect(ours).toHaveLength(2);
    expect(links().filter((name) => ours.includes(name))).toStrictEqual([]);
  });

  test('bad options are refused before anything is created', async () => {
    await expect(createLab({ nodes: 0, networks: ['eth0'] })).rejects.toThrow('nodes must be');
    await expect(createLab({ nodes: 1, networks: [] })).rejects.toThrow('at least one network');
    await expect(createLab({ nodes: 1, networks: ['eth0', 'eth0'] })).rejects.toThrow('distinct');
    await expect(createLab({ nodes: 1, networks: ['eth0'], prefix: 'Too-Long!' })).rejects.toThrow(
      'prefix',
    );
  });

  describe('in a separate Node process', () => {
    let directory: string;

    beforeAll(() => {
      // The harness runs in a plain Node process here, so it is compiled to JavaScript first.
      directory = mkdtempSync(join(tmpdir(), 'netns-harness-'));
      const source = readFileSync(join(import.meta.dirname, '..', 'fakes', 'netns.ts'), 'utf8');
      const { outputText } = ts.transpileModule(source, {
        compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
      });
      writeFileSync(join(directory, 'netns.mjs'), outputText);
      writeFileSync(
        join(directory, 'victim.mjs'),
        [
          "import { createLab } from './netns.mjs';",
          "const lab = await createLab({ nodes: 2, networks: ['eth0'], prefix: process.argv[2] });",
          "const sleeper = lab.spawnIn(lab.nodes[0], 'sleep', ['60']);",
          'const names = lab.nodes.map((node) => node.name);',
          'const veths = lab.nodes.flatMap((node) => Object.values(node.hostVeths));',
          'const bridges = Object.values(lab.bridges);',
          'console.log(JSON.stringify({ names, veths, bridges, sleeper: sleeper.pid }));',
          'setInterval(() => {}, 1000);',
        ].join('\n'),
      );
    });

    afterAll(() => {
      rmSync(directory, { recursive: true, force: true });
    });

    interface Victim {
      readonly names: string[];
      readonly veths: string[];
      readonly bridges: string[];
      readonly sleeper: number;
      readonly watchdog: number;
    }

    /** A process that created a lab and was then SIGKILLed, optionally with its watchdog. */
    async function killedVictim(prefix: string, killWatchdog: boolean): Promise<Victim> {
      const child = spawn(process.execPath, [join(directory, 'victim.mjs'), prefix], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const created = await new Promise<Omit<Victim, 'watchdog'>>((resolve, reject) => {
        child.stdout.once('data', (chunk: Buffer) => {
          resolve(JSON.parse(chunk.toString()) as Omit<Victim, 'watchdog'>);
        });
        child.once('exit', (code) => reject(new Error(`victim.mjs exited with ${code} early`)));
      });
      const watchdog = childrenOf(child.pid ?? 0).find((pid) =>
        readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(WATCHDOG_NAME),
      );
      expect(watchdog).toBeDefined();
      if (killWatchdog) process.kill(watchdog ?? 0, 'SIGKILL');
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      return { ...created, watchdog: watchdog ?? 0 };
    }

    /** `reclaimed`: a later lab may own one of the victim's bridge names by now. */
    const leftovers = (victim: Victim, reclaimed: readonly string[] = []) => ({
      namespaces: namespaces()
        .filter((name) => victim.names.includes(name))
        .sort(),
      links: links()
        .filter((name) => [...victim.veths, ...victim.bridges].includes(name))
        .filter((name) => !reclaimed.includes(name))
        .sort(),
      sleeperRunning: isRunning(victim.sleeper),
    });
    const nothingLeft = { namespaces: [], links: [], sleeperRunning: false };

    test('a lab that fails half-way is removed and the error says why', () => {
      const prefix = 'aph';
      const script = [
        "import { execFileSync } from 'node:child_process';",
        "import { createLab } from './netns.mjs';",
        "const ip = (...args) => execFileSync('ip', args, { encoding: 'utf8' });",
        // The second node's namespace name is taken, so creation fails after the first node.
        `const taken = '${prefix}-' + process.pid + '-1-2';`,
        "ip('netns', 'add', taken);",
        'let error;',
        'try {',
        `  await createLab({ nodes: 3, networks: ['eth0', 'net1'], prefix: '${prefix}' });`,
        '} catch (caught) {',
        '  error = caught.message;',
        '}',
        "const namespaces = ip('netns', 'list').split('\\n').map((l) => l.split(' ')[0]);",
        `const ours = namespaces.filter((n) => n.startsWith('${prefix}-' + process.pid));`,
        "const links = JSON.parse(ip('-j', 'link', 'show')).map((l) => l.ifname);",
        "ip('netns', 'del', taken);",
        'console.log(JSON.stringify({ error, ours, taken, links }));',
      ].join('\n');
      writeFileSync(join(directory, 'half-way.mjs'), script);
      const report = JSON.parse(run(process.execPath, [join(directory, 'half-way.mjs')])) as {
        error?: string;
        ours: string[];
        taken: string;
        links: string[];
      };
      expect(report.error).toMatch(
        /^could not create a network lab of 3 nodes on eth0, net1: .*netns add .*-1-2.*File exists/,
      );
      expect(report.ours).toStrictEqual([report.taken]);
      // Bridges of the lab were created before the failure; none is left.
      expect(report.links.filter((name) => name.startsWith(prefix))).toStrictEqual([]);
    });

    test('its watchdog removes the lab and the processes in it', async () => {
      const victim = await killedVictim('apk', false);
      expect(victim.names).toHaveLength(2);
      expect(victim.veths).toHaveLength(2);
      // The watchdog may exit before the kernel has finished the SIGKILLed sleeper on a loaded
      // machine: wait for both, within the deadline, then require nothing left.
      const deadline = Date.now() + 15_000;
      const done = () =>
        !isRunning(victim.watchdog) && isDeepStrictEqual(leftovers(victim), nothingLeft);
      while (!done() && Date.now() < deadline) await sleep(20);
      expect(leftovers(victim)).toStrictEqual(nothingLeft);
    });

    test('with its watchdog killed too, the next lab of the same prefix removes the leftovers', async () => {
      const victim = await killedVictim('apj', true);
      try {
        expect(leftovers(victim)).toStrictEqual({
          namespaces: [...victim.names].sort(),
          links: [...victim.veths, ...victim.bridges].sort(),
          sleeperRunning: true,
        });
      } finally {
        await withLab({ nodes: 1, networks: ['eth0'], prefix: 'apj' }, (lab) => {
          expect(leftovers(victim, linksOf(lab))).toStrictEqual(nothingLeft);
        });
      }
    });
  });
});
