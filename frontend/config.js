// Where the gateway lives: the one setting a deployment rewrites.
// `make local-up` serves its own version of this file (pointing at the local
// gateway); `make deploy-frontend` uploads one with the deployed gateway URL.
// An empty string means "the same origin as this page".
window.APP_CONFIG = {
  gatewayUrl: "http://127.0.0.1:8000",
};
