"""The Fashion-MNIST accuracy-vs-MFLOPs study: ``python -m study`` trains every row of
configs/experiment/study/ and writes results/fashion_mnist.md and results/accuracy_vs_mflops.png."""
