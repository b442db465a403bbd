import { toImageRef } from '../tes/image-rules.js';

/**
 * How an executor's `image` reaches the container runtime. Without an image cache the reference is
 * handed over as Apptainer understands it: `alpine` means `docker://alpine`; URIs and absolute paths
 * to image files stay as they are.
 */
export interface ImageResolver {
  resolve(image: string, field: string): Promise<string>;
}

// Which images tasks may use is a rule on requests, checked by the API at creation
// (tes/image-rules.ts); the image cache checks it again with links resolved.
export { checkImage, imageScheme, isUnder, toImageRef, type ImagePolicy } from '../tes/image-rules.js';

export class DirectImages implements ImageResolver {
  async resolve(image: string): Promise<string> {
    return toImageRef(image);
  }
}
