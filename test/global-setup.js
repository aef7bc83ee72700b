// Builds the C fakes (NVML, CUDA runtime) and the CUDA probe library against the fake runtime
// before any test runs, so every test file finds them in build/. make only rebuilds what changed.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function hasNvcc() {
  try {
    execFileSync('nvcc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export default function globalSetup() {
  const targets = [
    [join(root, 'test', 'fakes', 'native', 'nvml'), []],
    [join(root, 'cuda'), ['fake']],
  ];
  for (const [directory, goals] of targets) {
    if (!existsSync(join(directory, 'Makefile'))) continue;
    if (goals.includes('fake') && !hasNvcc()) {
      // The probe's host code is compiled by nvcc even for the fake runtime.
      throw new Error('nvcc not found: the CUDA probe tests need the CUDA toolkit (nvcc on PATH)');
    }
    execFileSync('make', ['-s', '-C', directory, ...goals], { stdio: 'inherit' });
  }
}
