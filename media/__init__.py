"""Media objects: which variants a post has, their sizes and URLs, and the origin that serves
them to the CDN edge."""
