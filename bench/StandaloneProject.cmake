# The settings of bench/'s stand-alone CMake projects (loadgen built alone,
# qt-echo, beast-echo), which bench/run builds without wsgate's top level.
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
if(NOT CMAKE_BUILD_TYPE)
    set(CMAKE_BUILD_TYPE Release)
endif()
