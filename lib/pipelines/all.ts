// Imports every module that registers a pipeline (registerPipeline) or a demo model (registerDemo);
// loadPipeline imports this file lazily. A pipeline adds itself with one import line here.
import './wan.js';
import './demo/wan.js';
import './zimage.js';
import './demo/zimage.js';
import './flux2-klein.js';
import './demo/flux2-klein.js';
