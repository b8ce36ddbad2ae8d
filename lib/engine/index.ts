// The engine's public surface: Tensor, creation, scopes and every op family.
export * from './dtype.js';
export * from './tensor.js';
export * from './device.js';
export * from './ops/basic.js';
export * from './ops/linalg.js';
export * from './ops/nn.js';
export * from './ops/fused.js';
export * from './ops/channel_norm.js';
