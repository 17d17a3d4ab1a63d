"""`make serve`: the API on 127.0.0.1:$PORT over the pipeline's tables and registry."""

import uvicorn

from serving.app import create_app
from serving.settings import ServingSettings


def main() -> None:
    from resources.deployments import local_resources_from_env

    settings = ServingSettings.from_env()
    if not settings.api_key_digests:
        print(
            "SERVING_API_KEY_DIGESTS is not set: the API accepts requests without a key, limited per client address (fine on a laptop only)"
        )
    uvicorn.run(create_app(settings, local_resources_from_env()), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
