// Builds the C fakes (NVML, CUDA runtime) and the CUDA probe library against the fake runtime
// before any test runs, so every test file finds them in build/. make only rebuilds what changed.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export default function globalSetup() {
  const targets = [
    [join(root, 'test', 'fakes', 'native', 'nvml'), []],
    [join(root, 'cuda'), ['fake']],
  ];
  for (const [directory, goals] of targets) {
    if (!existsSync(join(directory, 'Makefile'))) continue;
    execFileSync('make', ['-s', '-C', directory, ...goals], { stdio: 'inherit' });
  }
}
