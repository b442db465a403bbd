/**
 * How an executor's `image` reaches the container runtime. Without an image cache the reference is
 * handed over as Apptainer understands it: `alpine` means `docker://alpine`; URIs and absolute paths
 * to image files stay as they are.
 */
export interface ImageResolver {
  resolve(image: string, field: string): Promise<string>;
}

const URI = /^(docker|docker-archive|docker-daemon|oci|oci-archive|library|oras|shub|http|https):\/\//;

export function toImageRef(image: string): string {
  if (image.startsWith('/') || URI.test(image)) return image;
  return `docker://${image}`;
}

export class DirectImages implements ImageResolver {
  async resolve(image: string): Promise<string> {
    return toImageRef(image);
  }
}
