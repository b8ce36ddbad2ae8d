// The engine's public surface: Tensor, creation, scopes and every op family.
export * from './dtype.js';
export * from './tensor.js';
export * from './ops/basic.js';
