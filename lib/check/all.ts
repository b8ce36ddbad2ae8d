// Imports every module that registers check runners; the `check` command and the tests import
// this file. A pipeline adds its checks with one import line here.
import './tokenize.js';
import './wan.js';
import './wan-vae.js';
import './zimage.js';
import './flux2-klein.js';
import './lora.js';
