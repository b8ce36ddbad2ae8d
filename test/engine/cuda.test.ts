// CUDA discovery and device selection. On machines without a CUDA device (CI) this checks that the
// package loads, reports why CUDA is unavailable, refuses 'cuda' with that reason, and that the
// CUDA library was compiled and links whenever nvcc is present. The kernels themselves are
// checked against their CPU twins by `npm run test:gpu` on a GPU machine.
import { spawnSync } from 'node:child_process';

import t from 'tap';

import * as E from '../../lib/engine/index.js';

const info = E.cudaInfo();
const nvcc = spawnSync('nvcc', ['--version'], { encoding: 'utf8' });
const haveNvcc = nvcc.status === 0;

t.test('the CUDA library is built and links whenever nvcc is present', async (t) => {
  t.match(info.library.path, /libnd_cuda\.so$/);
  if (!haveNvcc) {
    t.comment('nvcc not found: the package was built for the CPU only');
    return;
  }
  t.ok(info.library.present, `libnd_cuda.so was built next to the addon (${info.library.path})`);
  t.ok(info.library.loaded, `libnd_cuda.so loads with every symbol resolved: ${info.library.error}`);
  const release = /release (\d+)\.(\d+)/.exec(nvcc.stdout);
  t.ok(release, 'nvcc reports its release');
  if (release) t.match(info.library.build, new RegExp(`^CUDA ${release[1]}\\.${release[2]}, sm_80,89,90a$`));
});

t.test('device selection', async (t) => {
  const saved = process.env.ND_DEVICE;
  t.teardown(() => {
    if (saved === undefined) delete process.env.ND_DEVICE;
    else process.env.ND_DEVICE = saved;
  });
  delete process.env.ND_DEVICE;
  t.equal(E.resolveDevice('cpu'), 'cpu');
  t.throws(() => E.resolveDevice('gpu'), /unknown device 'gpu' \(expected auto, cpu, cuda or cuda:N\)/);
  process.env.ND_DEVICE = 'tpu';
  t.throws(() => E.defaultDevice(), /ND_DEVICE: unknown device 'tpu'/);
  process.env.ND_DEVICE = 'cpu';
  t.equal(E.defaultDevice(), 'cpu');

  if (info.available) {
    t.ok(info.devices.length > 0, 'devices are listed');
    t.equal(E.resolveDevice('auto'), 'cuda');
    t.throws(() => E.resolveDevice(`cuda:${info.devices.length}`), /does not exist/);
    return;
  }
  t.comment(`CUDA tests skipped: no device (${info.reason})`);
  t.ok(info.reason.length > 0, 'a reason is given');
  if (info.driverVersion === 0) t.same(info.devices, [], 'no devices are listed without a driver');
  delete process.env.ND_DEVICE;
  t.equal(E.defaultDevice(), 'cpu', 'auto selection falls back to the CPU');
  t.equal(E.resolveDevice('auto'), 'cpu');
  const reason = info.reason.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  t.throws(() => E.resolveDevice('cuda'), new RegExp(`device 'cuda' was requested but CUDA is not available: ${reason}`));
  t.throws(() => E.resolveDevice('cuda:1'), /CUDA is not available/);
  process.env.ND_DEVICE = 'cuda';
  t.throws(() => E.defaultDevice(), /device 'cuda' was requested but CUDA is not available/);
  // ops asked for the device directly fail with the same reason, and nothing is allocated
  const before = E.memoryStats();
  t.throws(() => E.zeros([4], { device: 'cuda' }), new RegExp(`CUDA is not available: ${reason}`));
  t.throws(() => E.tensor([1, 2], [2]).toDevice('cuda'), /CUDA is not available/);
  t.equal(E.memoryStats().deviceBytes, before.deviceBytes);
  t.throws(() => E.synchronize('cuda'), /CUDA is not available/);
});
