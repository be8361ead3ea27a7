"""The SageMaker testing kit: a fake AWS in this process, for your tests and offline scripts.

moto runs SageMaker, S3, CloudWatch and STS in process; :class:`FakeSageMaker` adds what moto
lacks (``update_endpoint`` with blue/green rollouts and auto-rollback, Creating/Updating/Failed
states, real predictions from the mlshift model server) and injects faults at the HTTP layer so
botocore's own retries and error parsing run::

    from mlshift_sagemaker.testing import FakeSageMaker

    def test_my_deploy_script(tmp_path):
        with FakeSageMaker() as aws:
            client = mlshift.connect("sagemaker://us-east-1")
            my_deploy_script(client)
            assert client.endpoints.get("fraud").weights == {"fraud-v1": 90, "fraud-v2": 10}
            aws.throttle(attempts=2)            # every call: 2 throttled attempts, then success
            my_deploy_script(client)            # still converges

With pytest, the ``fake_sagemaker`` fixture (installed with the package) does the same. From a
shell, run any script unchanged against the fake::

    python -m mlshift_sagemaker.testing run examples/quickstart.py --target sagemaker://us-east-1

Needs moto: ``pip install "mlshift-sagemaker[testing]"``.
"""

from mlshift_sagemaker.testing._fake import AwsCall, FakeSageMaker, Fault, fake_sagemaker

__all__ = ["AwsCall", "FakeSageMaker", "Fault", "fake_sagemaker"]
